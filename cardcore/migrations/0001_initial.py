from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from cardcore.models.access import ClientKind, ClientStatus
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Client',
            fields=[
                ('client_id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=40)),
                ('kind', fields.CharEnumField(description='institution: institution\nterminal: terminal\npartner_app: partner_app\nadmin: admin', enum_type=ClientKind, max_length=16)),
                ('name', fields.CharField(max_length=128)),
                ('status', fields.CharEnumField(default=ClientStatus.pending, description='pending: pending\napproved: approved\ndisabled: disabled', enum_type=ClientStatus, max_length=16)),
                ('status_reason', fields.CharField(default='', max_length=255)),
                ('institution', fields.ForeignKeyField('cardcore.Client', source_field='institution_id', null=True, db_constraint=True, to_field='client_id', related_name='terminals', on_delete=OnDelete.RESTRICT)),
                ('secret_sealed', fields.TextField(unique=False)),
                ('disabled_functions', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('ip_allowlist', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('scopes', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'access_client', 'app': 'cardcore', 'indexes': [Index(fields=['kind', 'status'])], 'pk_attr': 'client_id'},
            bases=['Model'],
        ),
    ]
