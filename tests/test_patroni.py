"""The Patroni pair's failures: each names the component and shows its log, and nothing of the
lab is left running (Postgres runs in a session of its own, outside its agent's group)."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stack.components import patroni
from stack.components.etcd import EtcdServer
from stack.errors import ComponentFailed
from stack.lab import faults
from stack.lab.lab import Lab, read_state
from stack.runtime.processes import ProcessRecord
from stack.topology import AFTER

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# No Prometheus, no exporters: these tests are about the database's own lifecycle.
LEAN = AFTER.with_changes(prometheus=None, **{"postgres.start_deadline_s": 15.0})


def _nothing_running(state: dict, postmasters: list[ProcessRecord] = ()) -> bool:
    groups = [ProcessRecord(**c["process"]) for c in state["components"].values()
              if c.get("process")]
    return not any(r.group_alive() for r in [*groups, *postmasters])


def _postmasters(lab: Lab) -> list[ProcessRecord]:
    return [pm for n in ("postgres", "standby") if (pm := lab.component(n).postmaster())]


def test_render_config_keeps_the_leader_lock_honest():
    cfg = patroni.render_config(
        "pg1", port=5001, rest_port=8001, etcd_address="http://127.0.0.1:2379",
        data_dir=Path("/tmp/x"), bin_dir="/usr/bin", pgpass=Path("/tmp/p"), max_connections=40,
        synchronous=True, secrets={"lab": "a", "replicator": "b"})
    dcs = cfg["bootstrap"]["dcs"]
    assert dcs["ttl"] >= 20 and dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    assert dcs["synchronous_mode"] is True and dcs["synchronous_mode_strict"] is False
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert cfg["etcd3"] == {"host": "127.0.0.1:2379"}
    assert cfg["restapi"]["listen"] == "127.0.0.1:8001"


def test_failed_etcd_start_names_it_and_leaves_nothing(runs_root: Path, model_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    prepare = EtcdServer.prepare

    def data_dir_is_a_file(self):
        prepare(self)
        (self.dir / "data").write_text("not a directory\n")

    monkeypatch.setattr(EtcdServer, "prepare", data_dir_is_a_file)
    lab = Lab(LEAN, runs_root / "etcd-broken", model_dir=model_dir)
    with pytest.raises(ComponentFailed, match=r"etcd failed: exited with code") as err:
        lab.up()
    print(err.value)
    assert "data" in str(err.value).split("log:", 1)[1], "the error shows etcd's own words"
    state = read_state(lab.run_dir)
    assert state["status"] == "down" and _nothing_running(state)


def test_patroni_that_cannot_bootstrap_names_the_node(runs_root: Path, model_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    render = patroni.render_config

    def broken(*args, **kw):
        cfg = render(*args, **kw)
        cfg["bootstrap"]["initdb"] = [{"encoding": "NO-SUCH-ENCODING"}]
        return cfg

    monkeypatch.setattr(patroni, "render_config", broken)
    lab = Lab(LEAN, runs_root / "bootstrap-broken", model_dir=model_dir)
    with pytest.raises(ComponentFailed, match=r"^postgres failed") as err:
        lab.up()
    assert "server.log" in str(err.value)
    state = read_state(lab.run_dir)
    assert state["status"] == "down" and _nothing_running(state)


def test_node_that_cannot_rejoin_names_it(runs_root: Path, model_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    with Lab(LEAN, runs_root / "rejoin-broken", model_dir=model_dir) as lab:
        applied = faults.apply(lab, "node_loss", target="standby")
        node = lab.component("standby")
        monkeypatch.setattr(node, "argv", lambda: [sys.executable, "-c",
                                                   "import sys; sys.exit('cannot start')"])
        with pytest.raises(ComponentFailed, match=r"standby failed") as err:
            faults.undo(lab, applied)
        assert "cannot start" in str(err.value)
        postmasters = _postmasters(lab)
    assert _nothing_running(read_state(lab.run_dir), postmasters)


def test_stackctl_down_stops_postgres_outside_its_agents_group(runs_root: Path,
                                                               model_dir: Path):
    """A lab whose creator died: `stackctl down` ends the agents by their recorded groups and
    each node's Postgres by its data directory's postmaster.pid."""
    run_dir = runs_root / "orphaned-after"
    code = ("import sys, time; from stack.lab.lab import Lab; from stack.topology import AFTER; "
            "lab = Lab(AFTER.with_changes(prometheus=None), "
            f"{str(run_dir)!r}, model_dir={str(model_dir)!r}).up(); "
            "print('UP', flush=True); time.sleep(300)")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          text=True) as creator:
        try:
            assert creator.stdout.readline().strip() == "UP"
            state = read_state(run_dir)
            postmasters = [patroni.postmaster_record(n, Path(state["components"][n]["data_dir"]),
                                                     "") for n in ("postgres", "standby")]
            assert all(postmasters)
            creator.send_signal(signal.SIGKILL)
            creator.wait(10)
            stackctl = Path(sys.executable).parent / "stackctl"
            out = subprocess.run([str(stackctl), "down", "--run-dir", str(run_dir)],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
        finally:
            if creator.poll() is None:
                creator.kill()
            if (run_dir / "lab.json").exists() and read_state(run_dir)["status"] != "down":
                from stack.lab.lab import down_run
                down_run(run_dir)
    assert _nothing_running(read_state(run_dir), postmasters)
