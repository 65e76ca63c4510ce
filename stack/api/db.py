"""Postgres access: the connection pool, customer lookups and the predictions table."""
from __future__ import annotations

import logging
import select
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from stack.api.settings import ApiSettings

log = logging.getLogger(__name__)

# Errors that mean "the database is unavailable or too slow", answered with a 503
# (psycopg_pool's PoolTimeout and PoolClosed are psycopg.OperationalError subclasses).
DB_ERRORS: tuple[type[BaseException], ...] = (psycopg.Error,)

_CUSTOMER_COLUMNS = ("customer_id, home_country, account_age_days, avg_amount_30d, "
                     "txn_count_30d, chargebacks_1y")
_SELECT_CUSTOMER = f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE customer_id = %s"
# The db_delay_ms fault: the same lookup, made slow on the server by pg_sleep.
_SELECT_CUSTOMER_SLOW = (f"WITH delay AS MATERIALIZED (SELECT pg_sleep(%s)) "
                         f"SELECT {_CUSTOMER_COLUMNS} FROM customers, delay "
                         f"WHERE customer_id = %s")
_SELECT_PREDICTION = ("SELECT request_id, customer_id, inputs, score, model_version, replica "
                      "FROM predictions WHERE request_id = %s")
INSERT_PREDICTION = ("INSERT INTO predictions "
                      "(request_id, customer_id, inputs, score, model_version, replica) "
                      "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING")


def describe_error(exc: BaseException) -> str:
    """One line for a 503 body: the error's class and its first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no detail'}"


def _fast_reconnects() -> None:
    """psycopg_pool retries a failed connection after 1 s, then 2, 4, 8 s: after a Postgres
    failover that takes about a second, the pool would sit out several more. Start at 0.2 s
    and grow by 1.5x instead. (The pool's backoff is a class setting; this process owns it.)"""
    AttemptWithBackoff.INITIAL_DELAY = 0.2
    AttemptWithBackoff.DELAY_BACKOFF = 1.5


def check_connection(conn: psycopg.Connection) -> None:
    """The pool's check of a connection before it is lent: raises if the connection is dead.

    An idle connection to a live server has nothing to read. One whose server died, was
    fenced or shut down has: the end of the stream, or the server's last FATAL message. Only
    then is a round trip worth its cost (psycopg_pool's own check sends an empty query on
    every checkout, a round trip per request); a dead connection fails it and the pool takes
    or makes another."""
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


def make_pool(settings: ApiSettings) -> ConnectionPool:
    """A closed pool; call `.open(wait=False)` so a down database does not block startup."""
    timeout_ms = settings.db_statement_timeout_ms

    def configure(conn: psycopg.Connection) -> None:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{timeout_ms}ms",))

    _fast_reconnects()
    return ConnectionPool(
        settings.db_conninfo,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout_s,
        kwargs={"autocommit": True},
        configure=configure,
        check=check_connection,
        name=f"{settings.name}-db",
        open=False,
    )


def ping(pool: ConnectionPool, timeout_s: float = 1.0) -> None:
    """Run SELECT 1 through the pool; raises on failure."""
    with pool.connection(timeout=timeout_s) as conn:
        conn.execute("SELECT 1").fetchone()


def fetch_customer(pool: ConnectionPool, customer_id: int,
                   delay_ms: int = 0) -> dict[str, Any] | None:
    """The customer's feature row, or None if there is no such customer."""
    with pool.connection() as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            if delay_ms > 0:
                cur.execute(_SELECT_CUSTOMER_SLOW, (delay_ms / 1000.0, customer_id))
            else:
                cur.execute(_SELECT_CUSTOMER, (customer_id,))
            row = cur.fetchone()
    if row is not None:
        row["home_country"] = row["home_country"].strip()
    return row


def fetch_prediction(pool: ConnectionPool, request_id: uuid.UUID) -> dict[str, Any] | None:
    """A stored prediction by request_id, or None."""
    with pool.connection() as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_SELECT_PREDICTION, (request_id,))
            return cur.fetchone()


def insert_prediction(pool: ConnectionPool, request_id: uuid.UUID, customer_id: int,
                      inputs: dict[str, Any], score: float, model_version: str,
                      replica: str) -> bool:
    """Record a prediction (committed on return); False if that request_id already exists."""
    with pool.connection() as conn:
        cur = conn.execute(INSERT_PREDICTION, (request_id, customer_id, Jsonb(inputs), score,
                                                model_version, replica))
        return cur.rowcount == 1
