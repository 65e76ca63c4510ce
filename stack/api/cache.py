"""A Redis read-through cache for customer rows that never fails a request.

Any Redis error or timeout is logged at debug, counted, reported (rate-limited) and
answered as a miss, so the caller falls back to Postgres.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

# At most one sentry event per this many seconds for cache errors.
REPORT_INTERVAL_S = 10.0


def make_redis(url: str, timeout_s: float) -> redis.Redis:
    """A client with short timeouts and no retries: a slow Redis costs one timeout at most."""
    return redis.Redis.from_url(url, socket_timeout=timeout_s,
                                socket_connect_timeout=timeout_s,
                                retry=Retry(NoBackoff(), 0), decode_responses=True,
                                health_check_interval=0)


class CustomerCache:
    """Customer rows under `customer:<id>` as JSON, with a TTL."""

    def __init__(self, client: redis.Redis | None, ttl_s: int,
                 count: Callable[[str], None] = lambda result: None,
                 on_error: Callable[[BaseException], None] = lambda exc: None):
        self.client = client
        self.ttl_s = ttl_s
        self._count = count
        self._on_error = on_error

    @staticmethod
    def key(customer_id: int) -> str:
        return f"customer:{customer_id}"

    def get(self, customer_id: int) -> dict[str, Any] | None:
        """The cached row, or None on a miss, an error or no Redis."""
        if self.client is None:
            self._count("disabled")
            return None
        try:
            raw = self.client.get(self.key(customer_id))
            row = json.loads(raw) if raw is not None else None
        except Exception as exc:  # any Redis failure must fall back to Postgres
            self._failed("get", exc)
            return None
        self._count("hit" if row is not None else "miss")
        return row

    def put(self, customer_id: int, row: dict[str, Any]) -> None:
        """Store a row; failures are logged and ignored."""
        if self.client is None:
            return
        try:
            self.client.set(self.key(customer_id), json.dumps(row), ex=self.ttl_s)
        except Exception as exc:  # a failed write only costs a later miss
            log.debug("redis set failed: %r", exc)
            self._on_error(exc)

    def _failed(self, op: str, exc: BaseException) -> None:
        log.debug("redis %s failed, using postgres: %r", op, exc)
        self._count("error")
        self._on_error(exc)

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception as exc:
                log.debug("redis close failed: %r", exc)
