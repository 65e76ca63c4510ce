"""A lab: the real processes of one topology, in one run directory, torn down in layers.

Cleanup has three layers: the context manager, an atexit sweep, and the state file
(``lab.json`` in the run directory) that lets ``stackctl down`` or a later notebook cell stop
a lab whose creator was killed. Only the PIDs the state file records are ever signalled.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import shutil
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx

from stack.runtime import ports
from stack.components.apiserver import ApiReplica
from stack.components.base import Component
from stack.errors import LabStateError, StackError
from stack.components.etcd import EtcdServer
from stack.components.nginx import NginxServer
from stack.components.postgres import API_ROLE, BATCH_ROLE, REPLICATION_ROLE, SUPERUSER, PostgresServer
from stack.components.postgres import conninfo as pg_conninfo
from stack.components.patroni import PatroniNode, stop_leftover_postmaster
from stack.components.redis_server import RedisServer
from stack.runtime.processes import ManagedProcess, ProcessRecord
from stack.topology import Topology, load_topology, parse_topology
from stack.components.supervisor import SupervisedProcess, Supervisor, current_record
from stack.components.watchdog import MemoryWatchdog

log = logging.getLogger(__name__)

STATE_FILE = "lab.json"
KEEP_RUNS = 40  # finished run directories kept under the runs root; older ones are removed
EDGE = "edge"  # a scenario's name for what clients connect to, whichever topology it runs on


def _edge(names: Any) -> str:
    """What EDGE names among these components: nginx where there is one, else 'api'."""
    return "nginx" if "nginx" in names else "api"
DEFAULT_STOP_ORDER = 5  # a state file's component without one stops last


def runs_root() -> Path:
    """Where labs live: STACK_RUNS_DIR, else a folder in /tmp that every user can enter (the
    Postgres user must reach its data directory when the lab runs as root)."""
    env = os.environ.get("STACK_RUNS_DIR")
    return Path(env) if env else Path("/tmp") / f"uptime-lab-{os.geteuid()}"


def project_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else None


def default_model_dir() -> Path:
    """The registry `make setup` trains into: STACK_MODEL_DIR, else models/ in the project."""
    env = os.environ.get("STACK_MODEL_DIR")
    if env:
        return Path(env)
    root = project_root()
    return (root / "models") if root else Path.home() / ".cache" / "uptime-playbook" / "models"


def ensure_model(model_dir: Path | None = None) -> Path:
    """The model registry, with the first model trained if it has none yet."""
    model_dir = Path(model_dir or default_model_dir())
    try:  # a look at the manifest, without importing scikit-learn
        if json.loads((model_dir / "manifest.json").read_text()).get("models"):
            return model_dir
    except (OSError, json.JSONDecodeError):
        pass
    from stack.model.train import train

    log.info("no model in %s yet: training the first one", model_dir)
    train(model_dir)
    return model_dir


class Lab:
    """Start, inspect and stop the processes of one topology.

    >>> with Lab("before") as lab:          # doctest: +SKIP
    ...     httpx.get(lab.public_url + "/readyz")
    """

    def __init__(self, topology: str | Path | Topology = "before", run_dir: str | Path | None = None,
                 *, model_dir: str | Path | None = None, teardown_at_exit: bool = True):
        self.topology = load_topology(topology)
        self._named_here = run_dir is None  # under runs_root(), where old runs are pruned
        if run_dir is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run_dir = runs_root() / f"{stamp}-{self.topology.name}-{secrets.token_hex(3)}"
        self.run_dir = Path(run_dir)
        self.model_dir_source = Path(model_dir) if model_dir else None
        self.teardown_at_exit = teardown_at_exit
        self.secrets = {role: secrets.token_urlsafe(18)
                        for role in (SUPERUSER, API_ROLE, REPLICATION_ROLE, BATCH_ROLE)}
        self.admin_token = secrets.token_urlsafe(24)
        self.components: dict[str, Component] = {}
        self.timings: dict[str, float] = {}
        self._ports: set[int] = set()
        self._up = False

    # -- addresses --------------------------------------------------------------------------
    @property
    def apis(self) -> list[ApiReplica]:
        return [c for c in self.components.values() if isinstance(c, ApiReplica)]

    @property
    def db(self) -> PostgresServer:
        return self.components["postgres"]

    @property
    def public_url(self) -> str:
        """The public entry: nginx in front of the replicas, or the only replica."""
        if "nginx" in self.components:
            return self.components["nginx"].url
        return self.apis[0].url

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    def _port(self) -> int:
        return ports.free_port(taken=self._ports)

    # -- lifecycle --------------------------------------------------------------------------
    def up(self) -> "Lab":
        """Start every component and wait until each is ready; on any failure, stop what was
        started and raise the error that names the component."""
        if self._up:
            return self
        t0 = time.monotonic()
        if self._named_here:
            prune_runs(self.run_dir.parent)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)
        if self.teardown_at_exit:
            atexit.register(self.down)
        self._write_state("starting")
        try:
            self._start_all()
        except BaseException:
            self.down()
            raise
        self._up = True
        self.timings["up"] = time.monotonic() - t0
        self._write_state("up")
        log.info("lab %s up in %.1f s at %s", self.topology.name, self.timings["up"],
                 self.public_url)
        return self

    def _plan(self, known: dict[str, dict] | None = None) -> dict[str, Any]:
        """The component objects of the topology, not started. `known` gives the ports of a
        lab that already runs (attaching from its state file)."""
        known = known or {}
        topo = self.topology

        def port(name: str, key: str = "port") -> int:
            value = known.get(name, {}).get(key)
            if value:
                self._ports.add(int(value))
                return int(value)
            return self._port()

        plan: dict[str, Any] = {}
        supervisor = None
        if topo.supervise:
            supervisor = Supervisor("supervisor", self.run_dir, port("supervisor"),
                                    password=known.get("supervisor", {}).get("password"))
            plan["supervisor"] = supervisor
        pg_kw = {"max_connections": topo.postgres.max_connections,
                 "start_deadline_s": topo.postgres.start_deadline_s}
        etcd = None
        if topo.postgres.standby:
            # two nodes run by Patroni; its leader key in etcd decides which is the primary
            etcd = EtcdServer("etcd", self.run_dir, port("etcd"), port("etcd", "peer_port"))
            node_kw = {"max_connections": topo.postgres.max_connections,
                       "synchronous": topo.postgres.synchronous,
                       "start_deadline_s": max(topo.postgres.start_deadline_s, 60.0)}
            pg = PatroniNode("postgres", self.run_dir, port("postgres"),
                             port("postgres", "rest_port"), self.secrets, etcd.address,
                             **node_kw)
            standby = PatroniNode("standby", self.run_dir, port("standby"),
                                  port("standby", "rest_port"), self.secrets, etcd.address,
                                  **node_kw)
        else:
            pg = PostgresServer("postgres", self.run_dir, port("postgres"), self.secrets,
                                **pg_kw)
            standby = None
        if standby:
            # libpq tries each host in turn and keeps the one that takes writes (Patroni lets
            # only the leader run as primary): after a failover the API finds the new one
            conninfo = pg_conninfo(f"{pg.port},{standby.port}", self.secrets[API_ROLE],
                                   host="127.0.0.1,127.0.0.1", target_session_attrs="read-write",
                                   connect_timeout=topo.api.db_connect_timeout_s)
        else:
            conninfo = pg.url_for(API_ROLE, connect_timeout=topo.api.db_connect_timeout_s)
        redis = RedisServer("redis", self.run_dir, port("redis"), topo.redis) if topo.redis else None
        for i in range(topo.api.replicas):
            name = f"api{i + 1}"
            plan[name] = ApiReplica(name, self.run_dir, port(name), port(name, "admin_port"),
                                    spec=topo.api, db_conninfo=conninfo,
                                    admin_token=self.admin_token,
                                    model_dir=self.run_dir / "models",
                                    redis_url=redis.address if redis else None)
        if etcd:
            plan["etcd"] = etcd
        plan["postgres"] = pg
        if standby:
            plan["standby"] = standby
        if redis:
            plan["redis"] = redis
        if topo.nginx:
            backends = [(a.name, a.port) for a in plan.values() if isinstance(a, ApiReplica)]
            plan["nginx"] = NginxServer("nginx", self.run_dir, port("nginx"),
                                        port("nginx", "status_port"), backends, topo.nginx)
        if topo.prometheus:
            self._plan_monitoring(plan, port)
        plan["watchdog"] = MemoryWatchdog("watchdog", self.run_dir, topo.api.memory_limit_mb)
        if supervisor:  # the Postgres nodes stand for machines of their own: Patroni's job
            for comp in plan.values():
                if comp.kind in ("api", "nginx", "redis"):
                    comp.supervisor = supervisor
        return plan

    def _plan_monitoring(self, plan: dict[str, Any], port: Any) -> None:
        """Prometheus and what it scrapes: the replicas, exporters for nginx, Postgres and
        Redis, the uptime probe (the real blackbox exporter), and Alertmanager
        with a webhook receiver that records every notification."""
        from stack.components.alerting import Alertmanager, WebhookReceiver
        from stack.components.exporters import NginxExporter, PostgresExporter, RedisExporter
        from stack.components.probe_exporter import ProbeExporter
        from stack.components.prometheus import PrometheusServer

        ps = self.topology.prometheus
        run = self.run_dir
        replicas = [c for c in plan.values() if isinstance(c, ApiReplica)]
        entry = plan["nginx"].url if "nginx" in plan else replicas[0].url
        webhook = plan["webhook"] = WebhookReceiver("webhook", run, port("webhook"))
        am = plan["alertmanager"] = Alertmanager.from_spec(
            "alertmanager", run, port("alertmanager"), webhook.url, ps)
        probe = plan["probe"] = ProbeExporter("probe", run, port("probe"),
                                              entry + ps.probe_path, ps.probe_timeout_s,
                                              scrape_timeout_s=ps.scrape_interval_s)
        targets: dict[str, list[str]] = {
            "api": [f"{a.name}=127.0.0.1:{a.port}" for a in replicas],
            "probe": [f"127.0.0.1:{probe.port}"]}
        if ps.exporters:
            if "nginx" in plan:
                exp = plan["nginx-exporter"] = NginxExporter.for_nginx(
                    "nginx-exporter", run, port("nginx-exporter"), plan["nginx"])
                targets["nginx"] = [exp.target]
            if "etcd" in plan:  # Patroni serves its own metrics on its REST port
                targets["patroni"] = [f"127.0.0.1:{plan[n].rest_port}"
                                      for n in ("postgres", "standby")]
            exp = plan["postgres-exporter"] = PostgresExporter(
                "postgres-exporter", run, port("postgres-exporter"), plan["postgres"].port,
                self.secrets[SUPERUSER])
            targets["postgres"] = [exp.target]
            if "redis" in plan:
                exp = plan["redis-exporter"] = RedisExporter(
                    "redis-exporter", run, port("redis-exporter"), plan["redis"].address)
                targets["redis"] = [exp.target]
        plan["prometheus"] = PrometheusServer(
            "prometheus", run, port("prometheus"), ps, targets,
            [run / "prometheus" / "slo.rules.yml"], am.url,
            job_options={"probe": probe.scrape_options()})

    def _start_monitoring(self, plan: dict[str, Any]) -> None:
        from stack.analysis.slo import SloSettings, write_rules

        write_rules(self.run_dir / "prometheus" / "slo.rules.yml",
                    SloSettings.from_spec(self.topology.prometheus))
        names = ["webhook", "alertmanager", "nginx-exporter", "postgres-exporter",
                 "redis-exporter", "probe", "prometheus"]
        started = [plan[n] for n in names if n in plan]
        for comp in started:
            self._started(comp)
        for comp in started:
            comp.wait_ready()
        # ready is not scraped: wait (bounded) until Prometheus has seen every target up
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                targets = plan["prometheus"].targets()
                if targets and all(t["health"] == "up" for t in targets):
                    break
            except StackError:
                pass
            time.sleep(0.25)

    @property
    def prometheus(self) -> Any:
        return self.components["prometheus"]

    def _start_all(self) -> None:
        from stack.model.data import generate_customers

        topo = self.topology
        model_dir = self.run_dir / "models"
        if not model_dir.exists():
            shutil.copytree(ensure_model(self.model_dir_source), model_dir)
        plan = self._plan()
        replicas = [c for c in plan.values() if isinstance(c, ApiReplica)]
        pg = plan["postgres"]
        if "supervisor" in plan:  # before the programs it runs
            self._started(plan["supervisor"])
            plan["supervisor"].wait_ready()
        # The replicas spend seconds importing and loading the model: start them first, and
        # make the database meanwhile; they turn ready once it answers.
        for api in replicas:
            self._started(api)
        if "redis" in plan:
            self._started(plan["redis"])
        customers = generate_customers(topo.postgres.n_customers)
        if "standby" in plan:
            self._start_patroni(plan, customers)
        else:
            pg.init_primary()
            self._started(pg)
            pg.wait_ready()
            pg.load_schema(customers,
                           batch_connection_limit=topo.postgres.batch_connection_limit)
        if "nginx" in plan:
            self._started(plan["nginx"])
        for comp in plan.values():
            if comp.name in self.components and comp is not pg:
                comp.wait_ready()
        if "prometheus" in plan:
            self._start_monitoring(plan)
        if "watchdog" in plan:
            self._started(plan["watchdog"])

    def _start_patroni(self, plan: dict[str, Any], customers: list[dict]) -> None:
        """etcd; the first node bootstraps (initdb) and takes the leader key; the schema is
        loaded on it; the second clones it with pg_basebackup and becomes its synchronous
        standby. Each wait names the node and shows its log if it does not come."""
        topo = self.topology
        etcd, pg, standby = plan["etcd"], plan["postgres"], plan["standby"]
        self._started(etcd)
        etcd.wait_ready()
        self._started(pg)
        pg.proc.wait_ready(lambda: pg.check("/primary"), pg.start_deadline_s)
        pg.load_schema(customers, batch_connection_limit=topo.postgres.batch_connection_limit,
                       replication_role=False)  # Patroni made the replication role
        self._started(standby)
        standby.proc.wait_ready(lambda: standby.check("/replica"), standby.start_deadline_s)
        if topo.postgres.synchronous:
            # Patroni names the synchronous standby in its next loop
            standby.proc.wait_ready(lambda: standby.check("/sync"), standby.start_deadline_s)

    @classmethod
    def attach(cls, run_dir: str | Path | None = None) -> "Lab":
        """The Lab object of a lab that runs already (started by another process), from its
        state file. It does not tear the lab down when this process exits."""
        if run_dir is None:
            runs = live_runs()
            if len(runs) != 1:
                raise LabStateError(
                    f"{len(runs)} labs are running under {runs_root()}: name one with run_dir"
                    if runs else f"no lab is running under {runs_root()}: start one with "
                    "`stackctl up`")
            run_dir = runs[0]
        state = read_state(run_dir)
        if state.get("status") != "up":
            raise LabStateError(f"the lab in {run_dir} is {state.get('status')}, not up")
        lab = cls(parse_topology(state["topology"], source=str(run_dir)), run_dir,
                  teardown_at_exit=False)
        lab.secrets = state["secrets"]
        lab.admin_token = state["admin_token"]
        lab.components = lab._plan(state["components"])
        for name, comp in lab.components.items():
            rec = state["components"].get(name, {})
            if rec.get("process") and comp.supervisor is not None:
                comp.proc = SupervisedProcess.attached_to(
                    comp.supervisor.rpc_url, comp.supervisor.programs_dir,
                    ProcessRecord(**rec["process"]), stop_signal=rec["stop_signal"],
                    stop_timeout=rec["stop_timeout"])
            elif rec.get("process"):
                comp.proc = ManagedProcess.attached(
                    ProcessRecord(**rec["process"]), stop_signal=rec["stop_signal"],
                    stop_timeout=rec["stop_timeout"])
        lab._up = True
        return lab

    def _started(self, component: Any) -> None:
        """Start a component and record its process in the state file at once."""
        self.components[component.name] = component
        component.start()
        self._write_state("starting")

    def down(self) -> float:
        """Stop every component, newest first; safe to call twice. Returns the seconds taken."""
        t0 = time.monotonic()
        # from the front door inwards (each component knows its place): nothing serves while
        # what it needs is already gone
        for comp in sorted(self.components.values(), key=lambda c: c.stop_order):
            try:
                how = comp.stop()
                log.debug("%s: %s", comp.name, how)
            except Exception as exc:  # keep stopping the others
                log.warning("stopping %s failed: %s", comp.name, exc)
        if self.components or self.state_path.exists():
            self._write_state("down")
            _remove_data(self.run_dir)
        self._up = False
        if self.teardown_at_exit:
            atexit.unregister(self.down)
        self.timings["down"] = time.monotonic() - t0
        return self.timings["down"]

    def resolve(self, name: str) -> str:
        """A component's own name for a name a scenario may use: 'api' is the first replica;
        'edge' is what clients connect to (nginx where there is one, else the first
        replica). Other names are returned as given."""
        if name == EDGE:
            name = _edge(self.components)
        if name == "api" and self.apis:
            return self.apis[0].name
        return name

    def component(self, name: str) -> Any:
        """A component by name ('api' means the first replica, 'edge' what clients connect
        to)."""
        try:
            return self.components[self.resolve(name)]
        except KeyError:
            from stack.errors import UnknownName
            raise UnknownName("component", name, list(self.components) + ["api", EDGE]
                              ) from None

    def restart(self, name: str, *, wait: bool = True) -> float:
        """Stop a component if it still runs, start it again and wait until it is ready.
        Returns the seconds from the start to ready (what users wait through)."""
        comp = self.component(name)
        comp.stop()
        t0 = time.monotonic()
        comp.start()
        self._write_state("up" if self._up else "starting")
        log.info("restarted %s (pid %s)", name, comp.proc.pid)
        if wait:
            comp.wait_ready()
        return time.monotonic() - t0

    def keep_running(self) -> None:
        """Leave the lab up after this process exits (``stackctl up``): no atexit teardown."""
        self.teardown_at_exit = False
        atexit.unregister(self.down)

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- state ----------------------------------------------------------------------------
    def _write_state(self, status: str) -> None:
        comps = {name: comp.state() for name, comp in self.components.items()}
        state = {
            "status": status, "run_dir": str(self.run_dir), "owner_pid": os.getpid(),
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "topology": self.topology.model_dump(),
            "public_url": self.public_url if self.apis else None,
            "admin_token": self.admin_token, "secrets": self.secrets, "components": comps,
        }
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        os.replace(tmp, self.state_path)

    def status(self) -> list[dict]:
        return component_status(self.state_path)


# -- working from a state file (another process, or after the creator died) ---------------------
def read_state(run_dir: str | Path) -> dict:
    path = Path(run_dir) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LabStateError(f"no lab at {run_dir}: {STATE_FILE} is missing") from None
    except json.JSONDecodeError as exc:
        raise LabStateError(f"{path} is not valid JSON ({exc}): stop its processes by hand "
                            "or delete the folder") from None


def component_kinds(topology: str | Path | Topology) -> dict[str, str]:
    """name -> kind of every component a lab of this topology runs ('api' names the first
    replica, 'edge' what clients connect to), without starting anything: what a scenario's
    targets are checked against."""
    lab = Lab(topology, teardown_at_exit=False)
    kinds = {name: comp.kind for name, comp in lab._plan().items()}
    if "api1" in kinds:
        kinds["api"] = kinds["api1"]
    if _edge(kinds) in kinds:
        kinds[EDGE] = kinds[_edge(kinds)]
    return kinds


def _records(state: dict) -> Iterator[tuple[str, dict, ProcessRecord]]:
    """Each component's process: for a supervised one, the one its supervisor runs now."""
    for name, comp in state.get("components", {}).items():
        if comp.get("process"):
            yield name, comp, current_record(comp, ProcessRecord(**comp["process"]))


def component_status(state_path: str | Path) -> list[dict]:
    """For each component: pid, address, running, ready."""
    state = read_state(Path(state_path).parent)
    rows = []
    for name, comp, rec in _records(state):
        running = rec.group_alive()
        ready = False
        if running:
            if comp["kind"] == "api":
                try:
                    ready = httpx.get(comp["address"] + "/readyz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    ready = False
            elif comp.get("port"):
                ready = ports.is_listening(comp["port"])
            else:
                ready = True
        row = {"component": name, "kind": comp["kind"], "pid": rec.pid,
               "address": comp["address"], "running": running, "ready": ready}
        if comp["kind"] == "patroni":
            row.update(_patroni_role(comp))
        rows.append(row)
    return rows


def _patroni_role(comp: dict) -> dict[str, Any]:
    """Patroni's view of a node (its REST /patroni): role and timeline."""
    try:
        data = httpx.get(f"http://127.0.0.1:{comp['rest_port']}/patroni", timeout=1).json()
    except (httpx.HTTPError, ValueError, KeyError):
        return {"role": "unknown (its agent does not answer)", "timeline": None}
    return {"role": data.get("role"), "timeline": data.get("timeline")}


def down_run(run_dir: str | Path) -> list[tuple[str, str]]:
    """Stop a lab from its state file alone (its creator may be dead). Returns (name, how)."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    results = []
    # the supervisor first: it stops what it runs (it would start a program stopped under it
    # again), then the rest from the front door inwards
    for name, comp, rec in sorted(_records(state), key=lambda r: (
            r[1].get("kind") != "supervisor", r[1].get("stop_order", DEFAULT_STOP_ORDER))):
        how = rec.stop(stop_signal=comp.get("stop_signal", signal.SIGTERM),
                       timeout=comp.get("stop_timeout", 5.0)) if rec.group_alive() else "gone"
        if comp.get("kind") == "patroni":  # Postgres runs in a session of its own
            left = stop_leftover_postmaster(name, comp)
            if left:
                how += f"; postgres {left}"
        results.append((name, how))
    state["status"] = "down"
    (run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    _remove_data(run_dir)
    return results


def _run_statuses(root: Path) -> list[tuple[Path, str | None]]:
    """Each run directory under `root` with its state file's status, by name (None: the file
    is being written or unreadable)."""
    found = []
    for state in sorted(root.glob(f"*/{STATE_FILE}")):
        try:
            status = json.loads(state.read_text()).get("status")
        except (OSError, json.JSONDecodeError):
            status = None
        found.append((state.parent, status))
    return found


def live_runs(root: Path | None = None) -> list[Path]:
    """Run directories under the runs root whose state says the lab is not down (an
    unreadable state counts as not down)."""
    return [run_dir for run_dir, status in _run_statuses(root or runs_root())
            if status != "down"]


def prune_runs(root: Path, keep: int = KEEP_RUNS) -> list[Path]:
    """Remove the run directories of finished labs under `root` but the newest `keep` (by
    name, which starts with the time the lab was made); a lab that is not down, or whose
    state cannot be read, is never touched. Returns what was removed."""
    finished = [run_dir for run_dir, status in _run_statuses(root) if status == "down"]
    removed = finished[:len(finished) - keep] if len(finished) > keep else []
    for run_dir in removed:
        shutil.rmtree(run_dir, ignore_errors=True)
    if removed:
        log.info("removed %d finished run directories under %s (kept the newest %d)",
                 len(removed), root, keep)
    return removed


def _remove_data(run_dir: Path) -> None:
    """Database files are the bulk of a run directory; logs and records stay for reading."""
    for data in run_dir.glob("*/data"):
        shutil.rmtree(data, ignore_errors=True)
