"""`make course`: run every week's notebook end to end with papermill, and write the executed
notebooks, their figures and the summary to reports/."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Parameters per profile: CI keeps every notebook short; a workshop replays longer scenarios.
PROFILES: dict[str, dict[str, object]] = {
    "ci": {},  # each notebook's own defaults are the CI values
    "workshop": {"time_scale": 2.0},
}


def notebooks(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("notebooks/week*/*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def run(profile: str = "ci", *, in_place: bool = False, weeks: list[str] | None = None,
        root: Path | None = None) -> list[tuple[Path, float]]:
    import papermill

    root = root or Path(__file__).resolve().parents[2]
    reports = root / "reports"
    reports.mkdir(exist_ok=True)
    params = dict(PROFILES[profile])
    done = []
    for nb in notebooks(root):
        week = nb.parent.name
        if weeks and week not in weeks:
            continue
        out = nb if in_place else reports / f"{week}.ipynb"
        print(f"course: running {nb.relative_to(root)} ({profile}) -> {out.relative_to(root)}",
              flush=True)
        t0 = time.monotonic()
        papermill.execute_notebook(
            str(nb), str(out), parameters=params,
            cwd=str(nb.parent), kernel_name="python3", progress_bar=True)
        done.append((out, time.monotonic() - t0))
        print(f"course: {week} done in {done[-1][1]:.0f} s", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.course", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    parser.add_argument("--in-place", action="store_true",
                        help="re-execute the committed notebooks (CI parameters only)")
    parser.add_argument("--weeks", help="comma-separated, e.g. week1,week2")
    args = parser.parse_args(argv)
    if args.in_place and args.profile != "ci":
        parser.error("--in-place keeps the CI parameters that nbval replays; use --profile ci")
    t0 = time.monotonic()
    done = run(args.profile, in_place=args.in_place,
               weeks=args.weeks.split(",") if args.weeks else None)
    total = time.monotonic() - t0
    for path, secs in done:
        print(f"  {path}: {secs:.0f} s")
    print(f"course: {len(done)} notebooks in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
