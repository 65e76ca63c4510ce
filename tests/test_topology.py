from pathlib import Path

import pytest

from stack.errors import ConfigError, UnknownName
from stack.topology import AFTER, BEFORE, load_topology, parse_topology


def test_presets():
    assert load_topology("before") is BEFORE
    assert BEFORE.api.replicas == 1 and BEFORE.nginx is None and BEFORE.redis is None
    assert AFTER.api.replicas == 2 and AFTER.postgres.standby and AFTER.postgres.synchronous


def test_unknown_preset_lists_known_names():
    with pytest.raises(UnknownName, match="known: after, before"):
        load_topology("sideways")


def test_bad_value_names_the_field():
    with pytest.raises(ConfigError, match=r"field 'api\.replicas'.*less than or equal to 4"):
        parse_topology({"api": {"replicas": 9}})
    with pytest.raises(ConfigError, match=r"field 'nginx\.preset'"):
        parse_topology({"nginx": {"preset": "fast"}})
    with pytest.raises(ConfigError, match=r"field 'api\.retries'.*Extra inputs"):
        parse_topology({"api": {"retries": 3}})
    # nginx must close idle upstream connections before the replicas do
    with pytest.raises(ConfigError, match=r"field 'nginx\.keepalive_timeout_s'.*less than 75"):
        parse_topology({"nginx": {"keepalive_timeout_s": 90}})


def test_yaml_file(tmp_path: Path):
    f = tmp_path / "t.yaml"
    f.write_text("name: mine\napi:\n  replicas: 3\n")
    assert load_topology(f).api.replicas == 3
    f.write_text("name: mine\napi: [1, 2\n")
    with pytest.raises(ConfigError, match="line 3"):
        load_topology(f)


def test_with_changes_is_validated():
    assert BEFORE.with_changes(**{"api.replicas": 2}).api.replicas == 2
    with pytest.raises(ConfigError, match="api.db_pool_max"):
        BEFORE.with_changes(**{"api.db_pool_max": 0})
