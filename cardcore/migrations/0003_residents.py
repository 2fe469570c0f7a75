from tortoise import migrations
from tortoise.migrations import operations as ops
from cardcore.models.residents import LoginChannel, Relation
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('cardcore', '0002_cards')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ResidentAccount',
            fields=[
                ('account_id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=24)),
                ('channel', fields.CharEnumField(description='wechat: wechat\nwechat_mini: wechat_mini\nalipay: alipay\nphone: phone', enum_type=LoginChannel, max_length=12)),
                ('subject_index', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'resident_account', 'app': 'cardcore', 'unique_together': (('channel', 'subject_index'),), 'pk_attr': 'account_id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CardManager',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('cardcore.ResidentAccount', source_field='account_id', db_constraint=True, to_field='account_id', related_name='managed', on_delete=OnDelete.CASCADE)),
                ('card', fields.ForeignKeyField('cardcore.Card', source_field='card_id', db_constraint=True, to_field='health_card_id', related_name='managers', on_delete=OnDelete.CASCADE)),
                ('relation', fields.CharEnumField(description='spouse: spouse\nchild: child\nparent: parent\ngrandparent: grandparent\ngrandchild: grandchild\nsibling: sibling\nother: other', enum_type=Relation, max_length=12)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'card_manager', 'app': 'cardcore', 'unique_together': (('account', 'card'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Card',
            name='holder_account',
            field=fields.OneToOneField('cardcore.ResidentAccount', source_field='holder_account_id', null=True, db_constraint=True, to_field='account_id', related_name='own_card', on_delete=OnDelete.SET_NULL),
        ),
    ]
