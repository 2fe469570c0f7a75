"""Settings from the environment, and the production start-up refusals."""

import subprocess
import sys

import pytest

from cardcore.keyvault import KeyVault
from cardcore.settings import Settings, SettingsError
from openplatform.app import create_app, startup_problems

PROD_OK = {
    "EHC_ENV": "prod",
    "EHC_DATABASE_URL": "postgres://ehc@db:5432/ehc",
    "EHC_REDIS_URL": "redis://cache:6379/0",
}


@pytest.fixture
def prod_key_file(tmp_path):
    path = tmp_path / "prod-keys.json"
    KeyVault.generate(path, dev=False)
    return str(path)


def test_defaults_are_the_embedded_ones(tmp_path):
    settings = Settings.from_env({"EHC_VAR_DIR": str(tmp_path)})
    assert settings.env == "dev" and settings.port == 8000
    assert settings.database_url == f"sqlite://{tmp_path / 'ehc.sqlite3'}"
    assert settings.uses_fakeredis and settings.mount_mocks
    assert settings.dynamic_code_ttl_s == 60


def test_values_are_converted_and_checked():
    settings = Settings.from_env({"EHC_PORT": "9001", "EHC_MOUNT_MOCKS": "false", "EHC_DYNAMIC_CODE_TTL_S": "30"})
    assert settings.port == 9001 and settings.mount_mocks is False and settings.dynamic_code_ttl_s == 30
    with pytest.raises(SettingsError, match="EHC_PORT"):
        Settings.from_env({"EHC_PORT": "eighty"})
    with pytest.raises(SettingsError, match="EHC_ENV"):
        Settings.from_env({"EHC_ENV": "staging"})


def test_a_complete_production_configuration_starts(prod_key_file):
    settings = Settings.from_env({**PROD_OK, "EHC_KEY_FILE": prod_key_file})
    assert settings.mount_mocks is False
    assert startup_problems(settings) == []


@pytest.mark.parametrize(
    "override, phrase",
    [
        ({"EHC_DATABASE_URL": "sqlite://var/ehc.sqlite3"}, "SQLite"),
        ({"EHC_REDIS_URL": ""}, "fake Redis"),
        ({"EHC_KEY_FILE": ""}, "development keys"),
        ({"EHC_MOUNT_MOCKS": "1"}, "mock"),
    ],
)
def test_production_refuses_each_unsafe_setting(prod_key_file, override, phrase):
    env = {**PROD_OK, "EHC_KEY_FILE": prod_key_file, **override}
    env = {k: v for k, v in env.items() if v}
    problems = startup_problems(Settings.from_env(env))
    assert len(problems) == 1 and phrase in problems[0]
    with pytest.raises(SettingsError, match="refusing to start in production"):
        create_app(Settings.from_env(env), name="ehc_prod_check")


def test_production_refuses_a_key_file_of_development_keys(tmp_path):
    dev_keys = tmp_path / "keys.json"
    KeyVault.generate(dev_keys, dev=True)
    problems = startup_problems(Settings.from_env({**PROD_OK, "EHC_KEY_FILE": str(dev_keys)}))
    assert problems == [f"EHC_KEY_FILE {dev_keys} holds development keys."]


def test_production_refuses_the_generated_dev_key_file(tmp_path):
    env = {**PROD_OK, "EHC_VAR_DIR": str(tmp_path), "EHC_KEY_FILE": str(tmp_path / "dev-keys.json")}
    assert any("development key file" in p for p in startup_problems(Settings.from_env(env)))


def test_serve_command_prints_every_reason_and_exits(tmp_path):
    env = {"EHC_ENV": "prod", "EHC_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "openplatform", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    for phrase in ("SQLite", "EHC_REDIS_URL", "EHC_KEY_FILE"):
        assert phrase in result.stderr
    assert "serving" not in result.stdout
