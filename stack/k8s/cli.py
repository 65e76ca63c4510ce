"""`stackctl render k8s`: the AFTER topology as Kubernetes manifests, validated offline.

stack/cli.py registers it with `add_parser(sub)`; nothing heavy is imported until it runs.
"""
from __future__ import annotations

import argparse
from collections import Counter

from stack.k8s.render import K8sOptions
from stack.k8s.validate import DEFAULT_KUBERNETES_VERSION

_D = K8sOptions()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `render k8s` to stackctl's subcommands; returns the `render` parser."""
    render = subparsers.add_parser("render", help="render the topology for another platform")
    targets = render.add_subparsers(dest="target", required=True)
    p = targets.add_parser("k8s", help="Kubernetes manifests from the topology, validated "
                           "offline (docs/kubernetes.md)")
    p.add_argument("--topology", default="after",
                   help="preset (after, monitored) or a YAML topology file (default: after)")
    p.add_argument("-o", "--out", dest="out", required=True, metavar="DIR",
                   help="folder to write (new, empty, or an earlier render)")
    p.add_argument("--namespace", default=_D.namespace)
    p.add_argument("--image", default=_D.image, help="the API image (the package and "
                   "models/ inside)")
    p.add_argument("--slot", default=_D.slot, choices=["blue", "green"],
                   help="the colour to render and switch to (default: blue)")
    p.add_argument("--model-version", default=None, help="model the colour serves, e.g. v2 "
                   "(default: the image's deployed one)")
    p.add_argument("--host", default=None, help="the Ingress host (default: any)")
    p.add_argument("--ingress-class", default=_D.ingress_class)
    p.add_argument("--max-replicas", type=int, default=None,
                   help="autoscaler ceiling (default: twice the topology's replicas)")
    p.add_argument("--cpu-request", default=_D.cpu_request)
    p.add_argument("--cpu-target", type=int, default=_D.cpu_target_percent,
                   help="autoscale at this CPU utilization, percent")
    p.add_argument("--prestop-sleep", type=int, default=_D.prestop_sleep_s,
                   help="seconds a stopping pod keeps serving while the ingress lets go")
    p.add_argument("--db-volume", default=_D.db_volume)
    p.add_argument("--postgres-version", default=_D.postgres_version)
    p.add_argument("--scrape-interval", default=_D.scrape_interval)
    p.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION,
                   help="validate against this Kubernetes version's schemas")
    p.add_argument("--exact", action="store_true",
                   help="refuse any topology value Kubernetes can only approximate")
    p.set_defaults(func=cmd_render_k8s)
    return render


def options_from(args: argparse.Namespace) -> K8sOptions:
    return K8sOptions(namespace=args.namespace, image=args.image, slot=args.slot,
                      model_version=args.model_version, host=args.host,
                      ingress_class=args.ingress_class, max_replicas=args.max_replicas,
                      cpu_request=args.cpu_request, cpu_target_percent=args.cpu_target,
                      prestop_sleep_s=args.prestop_sleep, db_volume=args.db_volume,
                      postgres_version=args.postgres_version,
                      scrape_interval=args.scrape_interval, exact=args.exact)


def cmd_render_k8s(args: argparse.Namespace) -> int:
    from stack.k8s.output import write_manifests
    from stack.topology import load_topology

    result = write_manifests(load_topology(args.topology), args.out, options_from(args),
                             args.kubernetes_version)
    print(f"wrote {len(result.files)} files, {len(result.checks)} objects to {result.out_dir}")
    for path in result.files:
        print(f"  {path.name}")
    print("validated offline:")
    for how, n in Counter(result.checks.values()).most_common():
        print(f"  {n:>2} against the {how}")
    if result.notes:
        print("approximated (--exact refuses these):")
        for note in result.notes:
            print(f"  {note}")
    return 0
