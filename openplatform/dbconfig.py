"""Tortoise configuration for ``python -m tortoise`` (``makemigrations``), from the environment."""

from cardcore.db import tortoise_config
from cardcore.settings import Settings
from openplatform.app import MODEL_APPS

TORTOISE_ORM = tortoise_config(Settings.from_env().database_url, MODEL_APPS)
