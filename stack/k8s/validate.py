"""Check rendered objects offline, each against the best description of its kind we have.

- Core objects (Deployment, Service, Ingress, PodDisruptionBudget, HorizontalPodAutoscaler, ...):
  the Kubernetes JSON schemas that kubernetes-validate ships, strict (an unknown field fails).
- Custom resources: no registry package ships their CRD schemas in a form we can load (the one
  PyPI package of generated prometheus-operator models also installs a pytest plugin into
  every test run), so the project's typed models, strict about unknown fields:
  stack/k8s/monitoring.py (PrometheusRule, ServiceMonitor, Probe) and stack/k8s/zalando.py
  (Zalando's `postgresql`, the Patroni-run Postgres cluster).

Nothing here talks to a cluster: what only a real cluster can show is listed in
docs/kubernetes.md.
"""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from stack.errors import ConfigError

DEFAULT_KUBERNETES_VERSION = "1.30"  # the oldest the manifests are checked against
MONITORING = "monitoring.coreos.com/v1"
ZALANDO = "acid.zalan.do/v1"


def describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"


def _check_model(model: Any, obj: dict, where: str) -> None:
    """Validate a custom resource against its typed model; a ConfigError names the field."""
    try:
        model.model_validate(obj)
    except ValidationError as exc:
        field, msg = _pydantic_field(exc)
        raise ConfigError(msg, field=field, source=where) from None


def _pydantic_field(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    path = ""
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)", err["msg"]


def validate_object(obj: dict[str, Any], kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
                    source: str = "manifest") -> str:
    """Check one object; return what it was checked against. A failure raises ConfigError
    naming the object and the field."""
    api, kind = obj.get("apiVersion"), obj.get("kind")
    where = f"{source}: {describe(obj)}"
    if api == MONITORING:
        from stack.k8s.monitoring import MODELS

        model = MODELS.get(str(kind))
        if model is None:
            raise ConfigError(f"no model for {kind} in {api}", source=where, field="kind")
        _check_model(model, obj, where)
        return "typed model of the prometheus-operator CRDs (stack/k8s/monitoring.py)"
    if api == ZALANDO:
        from stack.k8s.zalando import PostgresqlCluster

        _check_model(PostgresqlCluster, obj, where)
        return "typed model of Zalando's postgresql CRD (stack/k8s/zalando.py)"

    import kubernetes_validate

    try:
        version = kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        field = ".".join(str(p) for p in exc.path) or "(top level)"
        raise ConfigError(exc.message, field=field, source=where) from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ConfigError(exc.message, field="apiVersion", source=where) from None
    return f"Kubernetes {version} schema, strict (kubernetes-validate)"


def validate_all(files: dict[str, list[dict[str, Any]]],
                 kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> dict[str, str]:
    """Check every object of every file; return {"file: Kind/name": what it was checked
    against}."""
    out = {}
    for name, objects in files.items():
        for obj in objects:
            out[f"{name}: {describe(obj)}"] = validate_object(obj, kubernetes_version, name)
    return out
