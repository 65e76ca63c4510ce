"""Settings: one JSON file, strict fields, errors that name the field."""
import json

import pytest

from stack.api.settings import SETTINGS_ENV, ApiSettings, load_settings
from stack.errors import ConfigError

MINIMAL = {"name": "api1", "port": 8001, "admin_port": 9001, "admin_token": "t",
           "db_conninfo": "host=127.0.0.1 dbname=fraud", "model_dir": "models"}


def _write(tmp_path, data):
    path = tmp_path / "api1.json"
    path.write_text(json.dumps(data))
    return path


def test_defaults(tmp_path):
    settings = load_settings(_write(tmp_path, MINIMAL))
    assert settings.host == "127.0.0.1"
    assert (settings.db_pool_min, settings.db_pool_max, settings.db_pool_timeout_s) == (1, 8, 2.0)
    assert settings.db_statement_timeout_ms == 2000
    assert settings.redis_url is None and settings.redis_timeout_s == 0.05
    assert settings.cache_ttl_s == 30 and settings.model_version is None
    assert settings.sentry_dsn is None and settings.sentry_events_dir is None


def test_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(SETTINGS_ENV, str(_write(tmp_path, {**MINIMAL, "name": "api7"})))
    assert load_settings().name == "api7"


def test_no_path_says_what_to_do(monkeypatch):
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    with pytest.raises(ConfigError, match=SETTINGS_ENV):
        load_settings()


@pytest.mark.parametrize("change, field", [
    ({"portt": 1}, "portt"),
    ({"port": "eighty"}, "port"),
    ({"db_pool_timeout_s": 0}, "db_pool_timeout_s"),
])
def test_bad_field_is_named(tmp_path, change, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        load_settings(_write(tmp_path, {**MINIMAL, **change}))


def test_ports_must_differ():
    with pytest.raises(ValueError, match="must differ"):
        ApiSettings(**{**MINIMAL, "admin_port": 8001})


def test_bad_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.json")
