"""`stackctl`: start, inspect, break and stop the course's lab from a shell."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from stack.errors import ConfigError, StackError
from stack.k8s.cli import add_parser as add_render_parser
from stack.lab.lab import Lab, component_status, down_run, live_runs, read_state, runs_root


def _runs(args: argparse.Namespace) -> list[Path]:
    if getattr(args, "run_dir", None):
        return [Path(args.run_dir)]
    return live_runs()


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(args.topology, args.run_dir)
    lab.up()
    lab.keep_running()
    print(f"lab '{lab.topology.name}' up in {lab.timings['up']:.1f} s")
    print(f"  run dir:    {lab.run_dir}")
    print(f"  public url: {lab.public_url}")
    _print_status(lab.run_dir)
    print("stop it with: stackctl down")
    return 0


def _print_status(run_dir: Path) -> None:
    for row in component_status(run_dir / "lab.json"):
        state = "ready" if row["ready"] else ("running, not ready" if row["running"] else "stopped")
        if "role" in row:  # a Patroni node: its role and timeline, as Patroni sees them
            state += f", {row['role']}, timeline {row['timeline']}"
        print(f"  {row['component']:<18} pid {row['pid']:<8} {row['address']:<32} {state}")


def cmd_status(args: argparse.Namespace) -> int:
    runs = _runs(args)
    if not runs:
        print(f"no lab is running (under {runs_root()})")
        return 0
    for run in runs:
        state = read_state(run)
        print(f"lab '{state['topology']['name']}' ({state['status']}) in {run}")
        print(f"  public url: {state.get('public_url')}")
        _print_status(run)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    runs = _runs(args)
    if not runs:
        print("no lab to stop")
    for run in runs:
        for name, how in down_run(run):
            print(f"  {name:<10} {how}")
        print(f"lab in {run} is down")
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    from stack.lab import faults

    if args.list or not args.name:
        for name, summary in faults.describe():
            print(f"  {name:<22} {summary}")
        return 0
    lab = Lab.attach(args.run_dir)
    params = _params(args.param)
    applied = faults.apply(lab, args.name, args.target, **params)
    target = applied.target  # 'edge' and 'api' resolved to the component itself
    print(f"fault {args.name} on {target}: applied"
          + (f" for {args.seconds:g} s" if args.seconds else " (Ctrl-C undoes it)"))
    try:
        if args.seconds:
            time.sleep(args.seconds)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        faults.undo(lab, applied)
        print(f"fault {args.name} on {target}: undone")
    return 0


def _params(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"expected KEY=VALUE, got {pair!r}", field="--param")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_scenario(args: argparse.Namespace) -> int:
    from stack.lab import faults
    from stack.lab.runner import run_scenario
    from stack.scenario import load_scenario

    from stack.lab.lab import component_kinds
    from stack.topology import load_topology

    topology = load_topology(args.topology)
    # every event's fault and target are checked against this topology before a lab starts
    scenario = load_scenario(args.file, components=component_kinds(topology),
                             **faults.scenario_checks())
    if args.time_scale != 1.0:
        scenario = scenario.scaled(args.time_scale)
    # as the notebooks do: with nginx in front, POSTs carry an Idempotency-Key, which lets
    # nginx retry them on the other replica (--no-idempotency-keys shows the difference)
    keys = topology.nginx is not None if args.idempotency_keys is None else args.idempotency_keys
    with Lab(topology) as lab:
        print(f"lab '{lab.topology.name}' up in {lab.timings['up']:.1f} s; replaying "
              f"{scenario.name} ({scenario.duration_s:g} s, {len(scenario.events)} faults), "
              f"Idempotency-Keys {'on' if keys else 'off'}")
        result = run_scenario(lab, scenario, idempotency_keys=keys)
        s = result.summary()
    for note in result.stretched:
        print(f"window lengthened: {note}")
    week = result.week()  # no Prometheus runs here: no page times
    print(f"availability over the week it stands for: {week.headline()}")
    print(f"availability in the replay: {s['availability']:.3%} of {s['requests']} requests "
          f"({s['failed']} failed; probes {s['probe_availability']:.3%}), "
          f"p99 {s['p99_ms']:.0f} ms")
    if result.client_note:
        print(f"INCONCLUSIVE: {result.client_note}")
    print("per incident:")
    print(_indent(week.table().to_string()))
    for f in result.faults:
        if f["error"]:
            print(f"  {f['fault']} on {f['target']} at t={f['start']:.1f} s: {f['error']}")
    explained = result.explain_failures()
    if len(explained):
        from stack.analysis.week import unexplained

        print(f"failed requests by who answered, fault window and error kind "
              f"({unexplained(explained)} outside every fault window):")
        print(_indent(explained.to_string(index=False)))
    print(f"records: {result.records_path}")
    return 0


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def cmd_doctor(args: argparse.Namespace) -> int:
    from stack import doctor

    checks = doctor.run(smoke=not args.no_smoke)
    for check in checks:
        print(check.line(), flush=True)
    failed = [c for c in checks if not c.ok]
    print(f"doctor: {len(checks) - len(failed)} of {len(checks)} checks passed")
    return 1 if failed else 0


def _print_report(report) -> int:
    print(report.summary())
    return 0 if report.ok else 1


def cmd_deploy(args: argparse.Namespace) -> int:
    from stack.deploy.rollout import deploy

    return _print_report(deploy(Lab.attach(args.run_dir), args.version, smoke_kw={
        "max_auc_drop": args.max_auc_drop, "latency_budget_ms": args.latency_budget_ms}))


def cmd_rollback(args: argparse.Namespace) -> int:
    from stack.deploy.rollout import rollback

    return _print_report(rollback(Lab.attach(args.run_dir)))


def cmd_restart(args: argparse.Namespace) -> int:
    lab = Lab.attach(args.run_dir)
    if args.rolling:
        from stack.deploy.rollout import rolling_restart

        return _print_report(rolling_restart(lab))
    print(f"{args.component} ready in {lab.restart(args.component):.1f} s "
          "(it was down meanwhile)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from stack.check import main as check_main

    return check_main([args.week, *args.tasks] + (["--solutions"] if args.solutions else []))


# -- the playbook on a team's own API (stack/own/) --------------------------------------------
def cmd_probe(args: argparse.Namespace) -> int:
    from stack.own import measure
    from stack.own.durations import bounded_duration, parse_duration

    interval = parse_duration(args.interval, "--interval")
    for_s = parse_duration(args.for_, "--for")
    timeout = bounded_duration(args.timeout, "--timeout", 0, 60) if args.timeout else None
    m = measure.probe(args.url, interval, for_s, timeout_s=timeout, out_dir=args.out,
                      progress=not args.quiet and None)
    print("\n".join(measure.report_lines(m, args.slo)))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from stack.own import measure
    from stack.own.durations import bounded_duration, parse_duration

    duration = parse_duration(args.duration, "--duration") if args.duration else None
    timeout = bounded_duration(args.timeout, "--timeout", 0, 60)
    body = measure.read_body(args.body) if args.body else None
    m = measure.load(args.url, args.rate, duration, method=args.method, body=body,
                     headers=measure.parse_headers(args.header), timeout_s=timeout,
                     out_dir=args.out, progress=not args.quiet and None)
    print("\n".join(measure.report_lines(m, args.slo)))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from stack.own.durations import parse_duration
    from stack.own.nginx_audit import audit

    report = audit(args.config,
                   client_timeout_s=parse_duration(args.client_timeout, "--client-timeout"),
                   app_keepalive_s=parse_duration(args.app_keepalive, "--app-keepalive"),
                   max_fail_timeout_s=parse_duration(args.max_fail_timeout,
                                                     "--max-fail-timeout"))
    print("\n".join(report.lines()))
    return 1 if report.found and args.strict else 0


def cmd_slo_render(args: argparse.Namespace) -> int:
    from stack.own.durations import parse_duration
    from stack.own.slo_render import ProdSlo, write

    slo = ProdSlo(job=args.job, target=args.target, requests_metric=args.requests_metric,
                  errors=args.errors, selector=args.selector,
                  latency_metric=None if args.no_latency else args.latency_metric,
                  latency_objective_s=parse_duration(args.latency_objective,
                                                     "--latency-objective"),
                  probe_job=args.probe_job)
    print("\n".join(write(slo, args.out, check=not args.no_check)))
    return 0


def _target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (e.g. 0.999)") from None
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What `probe` and `load` share: the objective, where records go, the progress bar."""
    p.add_argument("--slo", type=_target, default=0.999, help="objective (default 0.999)")
    p.add_argument("--out", help="folder for the records (default: a new one under "
                   f"{runs_root()})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_own_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="the week-1 uptime probe against any URL: availability, "
                       "downtime, a timeline of outages")
    p.add_argument("url", help="what to GET, e.g. https://api.example.com/health")
    p.add_argument("--interval", default="30s", help="between probes (5, 0.5s, 30s, 1h; "
                   "default 30s)")
    p.add_argument("--for", dest="for_", default="1h", help="how long (default 1h; Ctrl-C "
                   "ends it early with the figures so far)")
    p.add_argument("--timeout", help="a probe that takes longer failed (default: the interval, "
                   "at most 10s)")
    _add_run_options(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("load", help="open-loop load on any URL: p50/p95/p99, errors by kind, "
                       "late requests (both --rate and --duration required)")
    p.add_argument("url", help="where to send, e.g. http://127.0.0.1:8000/predict")
    p.add_argument("--rate", type=float, help="requests per second (at most 2000)")
    p.add_argument("--duration", help="how long (5, 0.5s, 30s, 10m; at most 1h)")
    p.add_argument("--method", help="HTTP method (default: GET, or POST with --body)")
    p.add_argument("--body", help="a JSON file sent as the body of every request")
    p.add_argument("--header", action="append", metavar="'NAME: VALUE'",
                   help="a request header (repeatable)")
    p.add_argument("--timeout", default="5s", help="a request that takes longer failed "
                   "(default 5s)")
    _add_run_options(p)
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("audit", help="static check of an nginx config for week 2's findings "
                       "(nginx -t first)")
    p.add_argument("config", help="nginx.conf, or a file of server/upstream blocks")
    p.add_argument("--client-timeout", default="5s", help="your clients' timeout (default 5s)")
    p.add_argument("--app-keepalive", default="5s", help="your app server's keep-alive "
                   "timeout (default 5s, uvicorn's)")
    p.add_argument("--max-fail-timeout", default="5s", help="longest fail_timeout to accept "
                   "(default 5s)")
    p.add_argument("--strict", action="store_true", help="exit 1 when there are findings")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("slo", help="SLO rules and dashboards for a real Prometheus")
    slo_sub = p.add_subparsers(dest="slo_command", required=True)
    p = slo_sub.add_parser("render", help="recording rules, burn-rate alerts and a Grafana "
                           "dashboard at real windows (5m ... 3d), checked with promtool")
    p.add_argument("--job", required=True, help="the Prometheus job of your API")
    p.add_argument("--target", type=_target, default=0.999, help="objective (default 0.999)")
    p.add_argument("-o", "--out", required=True, help="folder to write into")
    p.add_argument("--requests-metric", default="http_requests_total",
                   help="counter of requests (default http_requests_total)")
    p.add_argument("--errors", default='status=~"5.."',
                   help='matchers of the failed ones (default status=~"5..")')
    p.add_argument("--selector", default="", help='more matchers, e.g. route="/predict"')
    p.add_argument("--latency-metric", default="http_request_duration_seconds",
                   help="histogram of request durations (default "
                   "http_request_duration_seconds)")
    p.add_argument("--no-latency", action="store_true", help="no latency histogram")
    p.add_argument("--latency-objective", default="0.5s", help="p99 objective (default 0.5s)")
    p.add_argument("--probe-job", help="the blackbox exporter's job, if you run one")
    p.add_argument("--no-check", action="store_true", help="do not run promtool")
    p.set_defaults(func=cmd_slo_render)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stackctl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the lab does")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="start a lab and leave it running")
    p.add_argument("--topology", default="before",
                   help="preset (before, after) or a YAML topology file")
    p.add_argument("--run-dir", help="folder for the lab (default: a new one under "
                   f"{runs_root()})")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("status", help="show each component: pid, address, ready or not")
    p.add_argument("--run-dir", help="one lab (default: every running lab)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("down", help="stop a lab, also one whose creator died")
    p.add_argument("--run-dir", help="one lab (default: every running lab)")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("fault", help="apply a fault to a running lab, hold it, then undo it")
    p.add_argument("name", nargs="?", help="the fault (see --list)")
    p.add_argument("target", nargs="?", default="api1", help="component (default: api1)")
    p.add_argument("--for", dest="seconds", type=float, default=None,
                   help="undo after this many seconds (default: on Ctrl-C)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="fault parameter")
    p.add_argument("--list", action="store_true", help="list the faults")
    p.add_argument("--run-dir", help="the lab (default: the only running lab)")
    p.set_defaults(func=cmd_fault)

    p = sub.add_parser("scenario", help="start a lab, replay a scenario under traffic, report, "
                       "tear down")
    p.add_argument("file", help="scenario YAML, e.g. scenarios/production_week.yaml")
    p.add_argument("--topology", default="before", help="before, after, or a YAML file")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="stretch (>1) or compress (<1) the timeline")
    p.add_argument("--idempotency-keys", action=argparse.BooleanOptionalAction, default=None,
                   help="send an Idempotency-Key with each POST (default: on when the "
                   "topology has nginx, as in the notebooks)")
    p.set_defaults(func=cmd_scenario)

    p = sub.add_parser("deploy", help="smoke-test a model, then serve it on every replica "
                       "or none")
    p.add_argument("version", help="a version in the lab's model manifest, e.g. v2")
    p.add_argument("--max-auc-drop", type=float, default=0.02)
    p.add_argument("--latency-budget-ms", type=float, default=50.0)
    p.add_argument("--run-dir", help="the lab (default: the only running lab)")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("rollback", help="serve the previous model version on every replica")
    p.add_argument("--run-dir", help="the lab (default: the only running lab)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("restart", help="restart a component; --rolling: every replica, no "
                       "downtime")
    p.add_argument("component", nargs="?", default="api")
    p.add_argument("--rolling", action="store_true",
                   help="drain, wait, restart, put back, one replica at a time")
    p.add_argument("--run-dir", help="the lab (default: the only running lab)")
    p.set_defaults(func=cmd_restart)

    p = sub.add_parser("check", help="check your exercise files for a week (or the solutions)")
    p.add_argument("week", choices=["week1", "week2", "week3", "week4"])
    p.add_argument("tasks", nargs="*", help="only these tasks (default: every task)")
    p.add_argument("--solutions", action="store_true", help="check the reference solutions")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("doctor", help="pre-flight check for a workshop machine")
    p.add_argument("--no-smoke", action="store_true", help="skip the 10-second smoke lab")
    p.set_defaults(func=cmd_doctor)

    _add_own_commands(sub)
    add_render_parser(sub)  # stackctl render k8s
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except StackError as exc:
        print(f"stackctl: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
