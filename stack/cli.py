"""`stackctl`: start, inspect, break and stop the course's lab from a shell."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import StackError
from .lab import Lab, component_status, down_run, live_runs, read_state, runs_root


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
        print(f"  {row['component']:<10} pid {row['pid']:<8} {row['address']:<32} {state}")


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
