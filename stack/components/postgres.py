"""Postgres: a primary made with initdb, optionally a streaming standby made with
pg_basebackup, started as an unprivileged user when the lab runs as root."""
from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
from importlib import resources
from pathlib import Path

import psycopg

from stack.runtime import binaries
from stack.errors import ComponentFailed, ConfigError
from stack.components.base import Component
from stack.runtime.processes import tail

log = logging.getLogger(__name__)

DB_NAME = "fraud"
SUPERUSER = "lab"
API_ROLE = "api"
REPLICATION_ROLE = "replicator"
BATCH_ROLE = "batch"  # what a batch job (or a leaking service) connects as


def os_user() -> str | None:
    """The user Postgres runs as: None (the current user) unless we are root, which Postgres
    refuses; then STACK_PG_USER, the 'stacklab' user `make setup` creates, or 'nobody'."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("STACK_PG_USER"), "stacklab", "nobody"):
        if not name:
            continue
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ConfigError("running as root but no unprivileged user for Postgres exists: "
                      "run `make setup` (it creates 'stacklab') or set STACK_PG_USER")


def _own(path: Path, user: str | None) -> None:
    if user:
        ent = pwd.getpwnam(user)
        os.chown(path, ent.pw_uid, ent.pw_gid)


def _check_traversable(path: Path, user: str | None) -> None:
    """The Postgres user must reach the data directory through every parent folder."""
    if not user:
        return
    uid = pwd.getpwnam(user).pw_uid
    for parent in list(path.resolve().parents)[::-1]:
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            raise ConfigError(f"Postgres runs as '{user}', who cannot enter {parent}: put the "
                              "run directory elsewhere (STACK_RUNS_DIR, default /tmp)",
                              field="run_dir")


def conninfo(port: int | str, password: str, user: str = API_ROLE, dbname: str = DB_NAME,
             **extra: object) -> str:
    parts = {"host": "127.0.0.1", "port": port, "dbname": dbname, "user": user,
             "password": password, **extra}
    return " ".join(f"{k}={v}" for k, v in parts.items())


class PostgresServer(Component):
    """One Postgres server (primary or standby) in the lab's run directory. Its data
    directory is made before start (`init_primary`, `init_standby`)."""

    kind = "postgres"
    stop_order = 4  # last: everything else uses it
    stop_signal = signal.SIGINT  # SIGINT is Postgres' fast shutdown

    def __init__(self, name: str, run_dir: Path, port: int, secrets: dict[str, str], *,
                 max_connections: int = 40, start_deadline_s: float = 20.0):
        super().__init__(name, run_dir, port, start_deadline_s=start_deadline_s,
                         stop_timeout_s=5.0)
        self.data = self.dir / "data"
        self.secrets = secrets
        self.max_connections = max_connections
        self.user = os_user()

    # -- helpers -------------------------------------------------------------------------
    def _run(self, argv: list[str], what: str, env: dict | None = None) -> None:
        logf = self.dir / f"{what}.log"
        with open(logf, "ab") as fh:
            _own(logf, self.user)
            res = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, user=self.user,
                                 env={**os.environ, **(env or {})}, timeout=120)
        if res.returncode != 0:
            raise ComponentFailed(self.name, f"{what} exited with code {res.returncode}",
                                  str(logf), tail(logf))

    def _prepare_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _check_traversable(self.dir, self.user)
        _own(self.dir, self.user)

    def _settings(self) -> str:
        return "\n".join([
            "# rendered by the lab from its topology",
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            "unix_socket_directories = ''",
            f"max_connections = {self.max_connections}",
            "shared_buffers = 64MB",
            "wal_level = replica",
            "max_wal_senders = 5",
            "max_replication_slots = 5",
            "wal_keep_size = 64MB",
            "hot_standby = on",
            "wal_sender_timeout = 5s",
            "wal_receiver_timeout = 5s",
            "wal_receiver_status_interval = 1s",
            "logging_collector = off",
            "log_min_messages = warning",
            "log_line_prefix = '%m [%p] '",
            "",
        ])

    @property
    def role(self) -> str:
        """'primary' or 'standby', as the server itself says."""
        with self.connect(dbname="postgres") as conn:
            return "standby" if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] \
                else "primary"

    def url_for(self, user: str = API_ROLE, **extra: object) -> str:
        return conninfo(self.port, self.secrets[user], user=user, **extra)

    def connect(self, user: str = SUPERUSER, dbname: str = DB_NAME, **kw) -> psycopg.Connection:
        return psycopg.connect(conninfo(self.port, self.secrets[user], user=user,
                                        dbname=dbname, connect_timeout=2), autocommit=True, **kw)

    # -- lifecycle -----------------------------------------------------------------------
    def init_primary(self) -> None:
        """initdb with a generated superuser password and scram auth on loopback."""
        self._prepare_dir()
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.secrets[SUPERUSER] + "\n")
        pwfile.chmod(0o600)
        _own(pwfile, self.user)
        self._run([binaries.find("initdb"), "-D", str(self.data), "-U", SUPERUSER,
                   "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                   "--locale=C", "--no-instructions"], "initdb")
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write(self._settings())

    def init_standby(self, primary: "PostgresServer", app_name: str) -> None:
        """A streaming-replication standby cloned from the primary with pg_basebackup."""
        self._prepare_dir()
        src = conninfo(primary.port, primary.secrets[REPLICATION_ROLE], user=REPLICATION_ROLE,
                       dbname="replication")
        self._run([binaries.find("pg_basebackup"), "-d", src, "-D", str(self.data),
                   "-X", "stream", "--checkpoint=fast", "--no-password"], "pg_basebackup")
        primary_conninfo = conninfo(primary.port, primary.secrets[REPLICATION_ROLE],
                                    user=REPLICATION_ROLE, dbname="replication",
                                    application_name=app_name)
        conf = self.data / "postgresql.conf"
        text = conf.read_text().replace(f"port = {primary.port}", f"port = {self.port}")
        text += f"primary_conninfo = '{primary_conninfo}'\n"
        conf.write_text(text)
        (self.data / "standby.signal").touch()
        _own(self.data / "standby.signal", self.user)

    def prepare(self) -> None:
        pass  # the data directory is made by init_primary / init_standby

    def argv(self) -> list[str]:
        return [binaries.find("postgres"), "-D", str(self.data)]

    def launch_options(self) -> dict[str, object]:
        return {"user": self.user}

    @property
    def address(self) -> str:
        return f"postgresql://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        """Accepts a connection and answers SELECT 1."""
        try:
            with psycopg.connect(conninfo(self.port, self.secrets[SUPERUSER], user=SUPERUSER,
                                          dbname="postgres", connect_timeout=1)) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def load_schema(self, customers: list[dict], batch_connection_limit: int = -1,
                    replication_role: bool = True) -> None:
        """Create the database, the roles, the tables, and load the customers."""
        with self.connect(dbname="postgres") as conn:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
            conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                psycopg.sql.Identifier(API_ROLE), psycopg.sql.Literal(self.secrets[API_ROLE])))
            conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {} PASSWORD {}")
                         .format(psycopg.sql.Identifier(BATCH_ROLE),
                                 psycopg.sql.Literal(batch_connection_limit),
                                 psycopg.sql.Literal(self.secrets[BATCH_ROLE])))
            if replication_role:
                conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}")
                             .format(psycopg.sql.Identifier(REPLICATION_ROLE),
                                     psycopg.sql.Literal(self.secrets[REPLICATION_ROLE])))
        schema = resources.files("stack.components").joinpath("schema.sql").read_text()
        with self.connect() as conn:
            conn.execute(schema)
            conn.execute(f"GRANT SELECT ON customers TO {API_ROLE}")
            conn.execute(f"GRANT SELECT, INSERT ON predictions TO {API_ROLE}")
            conn.execute(f"GRANT SELECT ON customers, predictions TO {BATCH_ROLE}")
            cols = list(customers[0]) if customers else []
            with conn.cursor() as cur:
                with cur.copy(f"COPY customers ({', '.join(cols)}) FROM STDIN") as cp:
                    for row in customers:
                        cp.write_row([row[c] for c in cols])

    def set_synchronous(self, standby_names: str) -> None:
        """Make commits wait for the named standby ('' turns synchronous replication off)."""
        with self.connect(dbname="postgres") as conn:
            conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}")
                         .format(psycopg.sql.Literal(standby_names)))
            conn.execute("SELECT pg_reload_conf()")

    def promote(self) -> None:
        """Turn a standby into a primary (pg_promote waits until it accepts writes)."""
        with self.connect(dbname="postgres") as conn:
            conn.execute("SELECT pg_promote(wait => true, wait_seconds => 10)")

