from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('cardcore', '0003_residents')]

    initial = False

    operations = [
        ops.AddField(
            model_name='CodeEvent',
            name='uid',
            field=fields.CharField(null=True, unique=True, max_length=32),
        ),
    ]
