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


def test_a_repeated_key_answers_the_stored_prediction(before_lab):
    """The insert finds a repeated Idempotency-Key by its conflict: the same answer, one row;
    the same key with other inputs is a 409."""
    import uuid

    import httpx

    body = {"customer_id": 7, "amount": 42.0, "merchant_category": "grocery", "country": "GB",
            "hour": 10, "is_online": False}
    key = str(uuid.uuid4())
    url = before_lab.public_url + "/predict"
    first = httpx.post(url, json=body, headers={"Idempotency-Key": key}, timeout=5)
    again = httpx.post(url, json=body, headers={"Idempotency-Key": key}, timeout=5)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json() == again.json() and first.json()["request_id"] == key
    other = httpx.post(url, json={**body, "amount": 43.0}, headers={"Idempotency-Key": key},
                       timeout=5)
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    with before_lab.db.connect() as conn:
        n = conn.execute("SELECT count(*) FROM predictions WHERE request_id = %s",
                         (key,)).fetchone()[0]
    assert n == 1
