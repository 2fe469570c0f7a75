from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from cardcore.empi.models import PersonStatus
from cardcore.models.cards import AuthLevel, CardStatus
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('cardcore', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AuditEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('actor', fields.CharField(max_length=40)),
                ('terminal_id', fields.CharField(null=True, max_length=40)),
                ('action', fields.CharField(max_length=32)),
                ('subject', fields.CharField(db_index=True, max_length=64)),
                ('detail', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'audit_event', 'app': 'cardcore', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CodeEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('action', fields.CharField(max_length=8)),
                ('health_card_id', fields.CharField(null=True, db_index=True, max_length=64)),
                ('code_type', fields.CharField(default='', max_length=8)),
                ('scene', fields.CharField(default='', max_length=16)),
                ('result', fields.CharField(max_length=32)),
                ('client_id', fields.CharField(default='', max_length=40)),
                ('institution_id', fields.CharField(null=True, max_length=40)),
                ('terminal_id', fields.CharField(null=True, max_length=40)),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'code_event', 'app': 'cardcore', 'indexes': [Index(fields=['institution_id', 'created_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Person',
            fields=[
                ('empi_id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=16)),
                ('name_sealed', fields.TextField(unique=False)),
                ('gender', fields.CharField(max_length=1)),
                ('birth_date', fields.DateField()),
                ('nation', fields.CharField(default='', max_length=2)),
                ('address_sealed', fields.TextField(default='', unique=False)),
                ('phone_sealed', fields.TextField(default='', unique=False)),
                ('phone_index', fields.CharField(default='', db_index=True, max_length=64)),
                ('status', fields.CharEnumField(default=PersonStatus.active, description='active: active\nvoided: voided', enum_type=PersonStatus, max_length=8)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'empi_person', 'app': 'cardcore', 'pk_attr': 'empi_id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='PersonIdentifier',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('person', fields.ForeignKeyField('cardcore.Person', source_field='person_id', db_constraint=True, to_field='empi_id', related_name='identifiers', on_delete=OnDelete.RESTRICT)),
                ('id_type', fields.CharField(max_length=2)),
                ('number_index', fields.CharField(max_length=64)),
                ('number_sealed', fields.TextField(unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'empi_identifier', 'app': 'cardcore', 'unique_together': (('id_type', 'number_index'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Card',
            fields=[
                ('health_card_id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('person', fields.OneToOneField('cardcore.Person', source_field='person_id', db_constraint=True, to_field='empi_id', related_name='card', on_delete=OnDelete.RESTRICT)),
                ('identifier', fields.OneToOneField('cardcore.PersonIdentifier', source_field='identifier_id', db_constraint=True, to_field='id', related_name='card', on_delete=OnDelete.RESTRICT)),
                ('security_key_version', fields.SmallIntField()),
                ('status', fields.CharEnumField(default=CardStatus.active, description='active: active\nfrozen: frozen\ncancelled: cancelled', enum_type=CardStatus, max_length=10)),
                ('auth_level', fields.CharEnumField(default=AuthLevel.weak, description='weak: weak\nstrong: strong', enum_type=AuthLevel, max_length=6)),
                ('registered_by', fields.CharField(max_length=40)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'card', 'app': 'cardcore', 'pk_attr': 'health_card_id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='UsageReport',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('health_card_id', fields.CharField(db_index=True, max_length=64)),
                ('scene', fields.CharField(max_length=16)),
                ('department', fields.CharField(default='', max_length=64)),
                ('occurred_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('institution_id', fields.CharField(max_length=40)),
                ('terminal_id', fields.CharField(null=True, max_length=40)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'card_usage', 'app': 'cardcore', 'pk_attr': 'id'},
            bases=['Model'],
        ),
    ]
