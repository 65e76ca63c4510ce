"""The package's exceptions: one root, one subclass per kind of failure, each with a message
that says what failed and what to do."""
from __future__ import annotations


class StackError(Exception):
    """Root of every error the lab raises on purpose."""


class ConfigError(StackError, ValueError):
    """A topology, scenario or setting has a bad value; the message names the field or line."""

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None,
                 source: str | None = None):
        where = []
        if source:
            where.append(str(source))
        if line is not None:
            where.append(f"line {line}")
        if field:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.field, self.line, self.source = field, line, source
        self.message = message  # without the place


class MissingBinary(StackError):
    """A program the lab needs (nginx, redis-server, postgres, ...) is not installed."""

    def __init__(self, name: str, hint: str):
        super().__init__(f"{name} is not installed: {hint}")
        self.name, self.hint = name, hint


class ComponentFailed(StackError):
    """A component did not become ready in time, or exited; the message shows its log's tail."""

    def __init__(self, component: str, reason: str, log_path: str | None = None,
                 log_tail: str = ""):
        msg = f"{component} failed: {reason}"
        if log_path:
            msg += f"\n  log: {log_path}"
        if log_tail:
            msg += "\n  last lines:\n" + "\n".join("    " + ln for ln in log_tail.splitlines())
        super().__init__(msg)
        self.component, self.reason, self.log_path, self.log_tail = (
            component, reason, log_path, log_tail)


class LabStateError(StackError):
    """No lab (or a broken state file) where one was expected."""


class UnknownName(StackError, KeyError):
    """A registry (faults, presets, services) was asked for a name it does not know."""

    def __init__(self, kind: str, name: str, known: list[str]):
        super().__init__(f"unknown {kind} '{name}'; known: {', '.join(sorted(known))}")
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ModelRejected(StackError):
    """A model file failed its integrity check or its smoke tests and was not activated."""


class QueryError(StackError):
    """Prometheus could not be reached or rejected a query; the message has its own words."""

    def __init__(self, expr: str, reason: str, url: str = ""):
        where = f" at {url}" if url else ""
        super().__init__(f"query {expr!r} failed{where}: {reason}")
        self.expr, self.reason, self.url = expr, reason, url


class DeployError(StackError):
    """A deploy, rollback or rolling restart could not start (another one runs, no replicas)."""


class InjectedFault(StackError):
    """An error raised on purpose by the error_rate fault."""


class SlotError(StackError):
    """A blue/green request the slots cannot satisfy (nothing staged, nothing to roll back)."""


class ApiError(StackError):
    """An expected failure answered as JSON `{"error": ..., "detail": ...}`."""

    def __init__(self, status_code: int, error: str, detail: object = None,
                 headers: dict[str, str] | None = None):
        super().__init__(f"{status_code} {error}: {detail}")
        self.status_code, self.error, self.detail = status_code, error, detail
        self.headers = headers or {}


class ExerciseFailed(StackError):
    """A learner's file did not pass its check; `hint` says what to try next."""

    def __init__(self, detail: str, hint: str = ""):
        super().__init__(detail)
        self.detail, self.hint = detail, hint


class NotExportable(StackError, ValueError):
    """The estimator is not one TreeEnsemble can reproduce exactly (see from_sklearn)."""


class EventFieldError(StackError, ValueError):
    """A scenario event's field is inconsistent with the scenario (raised inside validation,
    where `loc` points the file's line finder at the event's field)."""

    def __init__(self, index: int, field: str, msg: str):
        super().__init__(msg)
        self.loc = ("events", index, field)
