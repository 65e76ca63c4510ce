"""The API pool's connection check, against the real Postgres of a BEFORE lab."""
from __future__ import annotations

import time

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from stack.api.db import check_connection

pytestmark = [pytest.mark.integration]


def test_live_connection_passes_without_a_round_trip(before_lab, monkeypatch):
    calls = []
    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(calls.append))
    with before_lab.db.connect() as conn:
        conn.execute("SELECT 1").fetchone()
        check_connection(conn)
    assert calls == []


def test_connection_whose_backend_died_is_refused(before_lab):
    with before_lab.db.connect() as conn, before_lab.db.connect() as admin:
        conn.autocommit = True
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        time.sleep(0.2)  # the FATAL message and the end of the stream reach the socket
        with pytest.raises(psycopg.OperationalError):
            check_connection(conn)
