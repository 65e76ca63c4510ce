"""Write rendered manifests to a folder: all of them or none.

Every object is validated first (stack/k8s/validate.py); the files are written into a
temporary folder beside the target and moved into place in one rename, so a refused topology,
an invalid object or a full disk leaves the target as it was.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stack.errors import ConfigError
from stack.k8s.render import K8sOptions, Note, Rendered, render
from stack.k8s.validate import DEFAULT_KUBERNETES_VERSION, validate_all
from stack.topology import Topology

MARKER = ".rendered-by-stackctl"  # a folder holding it may be replaced by a new render

HEADERS = {
    "00-namespace.yaml": "The namespace everything below lives in.",
    "10-postgres.yaml": ("Postgres: a primary and a synchronous standby run by Patroni "
                         "(Zalando's postgres-operator).\nNeeds the operator installed "
                         "(its CRD postgresqls.acid.zalan.do)."),
    "20-redis.yaml": "The feature cache: the lab's redis.conf, a Deployment and a Service.",
    "30-api-blue.yaml": ("The blue colour of the API: settings, Deployment, its own Service, "
                         "disruption budget, autoscaler.\nApply, wait for `kubectl rollout "
                         "status`, smoke-test its Service, then apply 35-api-switch.yaml."),
    "30-api-green.yaml": ("The green colour of the API: settings, Deployment, its own Service, "
                          "disruption budget, autoscaler.\nApply, wait for `kubectl rollout "
                          "status`, smoke-test its Service, then apply 35-api-switch.yaml."),
    "35-api-switch.yaml": ("The blue/green switch: the Service the Ingress sends to selects one "
                           "colour.\nApplying it flips every replica at once; re-applying the "
                           "other colour's render flips back."),
    "40-ingress.yaml": ("The front door (ingress-nginx): the tuned preset's timeouts and "
                        "retries as annotations."),
    "41-ingress-nginx-controller.yaml": (
        "Controller-wide ingress-nginx settings (upstream keep-alive, worker shutdown).\n"
        "Merge these keys into your controller's ConfigMap (Helm: controller.config) rather "
        "than applying\nthis file over it."),
    "50-monitoring.yaml": ("prometheus-operator objects: the scrape, the SLO rules at real "
                           "windows, the uptime probe."),
}


class _Dumper(yaml.SafeDumper):
    """No anchors (kubectl users read these files) and block style for multi-line strings."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data,
                                   style="|" if "\n" in data else None)


_Dumper.add_representer(str, _str)


def dump(name: str, objects: list[dict[str, Any]], topology: str) -> str:
    """One multi-document YAML file with a header saying where it came from."""
    header = [f"# {line}" if line else "#" for line in HEADERS.get(name, "").splitlines()]
    header += [f"# Rendered by `stackctl render k8s --topology {topology}` from the lab's "
               "Topology; do not edit by hand."]
    docs = [yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100) for obj in objects]
    return "\n".join(header) + "\n---\n" + "---\n".join(docs)


@dataclass
class WriteResult:
    out_dir: Path
    files: list[Path]
    checks: dict[str, str]  # "file: Kind/name" -> what it was validated against
    notes: list[Note]


def _place(tmp: Path, out_dir: Path) -> None:
    """Move the finished folder into place: a missing or empty target, or one an earlier
    render wrote, is replaced; anything else is refused."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"{out_dir} exists and is not a folder", field="-o")
        entries = list(out_dir.iterdir())
        if entries and not (out_dir / MARKER).exists():
            raise ConfigError(f"{out_dir} holds files stackctl did not render; give an empty "
                              "or new folder", field="-o")
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rename(out_dir, old / out_dir.name)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            os.rename(old / out_dir.name, out_dir)  # put the previous render back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


def write_manifests(topo: Topology, out_dir: str | os.PathLike[str],
                    opt: K8sOptions = K8sOptions(),
                    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> WriteResult:
    """Render, validate every object, then write the whole set into `out_dir` at once."""
    rendered: Rendered = render(topo, opt)
    checks = validate_all(rendered.files, kubernetes_version)
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    try:
        for name, objects in rendered.files.items():
            path = tmp / name
            path.write_text(dump(name, objects, rendered.topology))
            if any(obj["kind"] == "Secret" for obj in objects):
                path.chmod(0o600)  # the admin token
        (tmp / MARKER).write_text(f"topology {rendered.topology}\n")
        tmp.chmod(0o755)
        _place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WriteResult(out_dir, [out_dir / n for n in rendered.files], checks, rendered.notes)
