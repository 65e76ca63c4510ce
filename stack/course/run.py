"""`make course`: run every week's notebook end to end with papermill, and write the executed
notebooks, their HTML pages (figures inline), their figures and the summary to reports/."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

KERNEL = "uptime-playbook"          # `make setup` installs it: the project's .venv
KERNEL_DISPLAY = "Uptime playbook"
FALLBACK_KERNEL = "python3"

# Parameters per profile. Each notebook's parameters cell holds the CI values, which the
# committed outputs were made with: the CI profile passes nothing. A workshop replays the
# scenarios at half speed (time_scale 2.0: every fault lasts twice as long), which gives the
# room time to watch a run. A parameter a notebook does not take is left out for it.
#   time_scale           weeks 1-4: scenario durations (weeks 1, 2 and 4 must agree to reuse runs)
#   traffic_rate         weeks 1-4: requests per second of the scenario replays (None: the
#                        scenario file's own rate, 40); lower it on a slow machine
#   rate                 week 4: requests per second during each deploy, restart, rollback
#   requests_per_action  week 4: requests sent across each of them
PROFILES: dict[str, dict[str, object]] = {
    "ci": {},
    "workshop": {"time_scale": 2.0, "traffic_rate": 40, "rate": 80, "requests_per_action": 2000},
}


def notebooks(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("notebooks/week*/*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def kernel_name(installed: set[str] | None = None) -> tuple[str, str]:
    """The kernel to run the notebooks on: the project's own when `make setup` installed it,
    else python3 (the Python that runs this), with a note saying so ("" when all is well)."""
    if installed is None:
        try:
            from jupyter_client.kernelspec import KernelSpecManager

            installed = set(KernelSpecManager().find_kernel_specs())
        except Exception:  # no Jupyter config at all: the fallback still runs
            installed = set()
    if KERNEL in installed:
        return KERNEL, ""
    return FALLBACK_KERNEL, (f"course: kernel '{KERNEL}' is not installed, running on "
                             f"'{FALLBACK_KERNEL}' (this Python must have the stack package); "
                             "`make setup` installs it")


def notebook_parameters(nb: Path, params: dict[str, object]) -> dict[str, object]:
    """Only the parameters this notebook's parameters cell defines (papermill would inject
    the others and warn)."""
    import ast

    import nbformat

    book = nbformat.read(nb, as_version=4)
    cells = [c for c in book.cells if c.cell_type == "code"
             and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        return {}
    names = {t.id for node in ast.walk(ast.parse(cells[0].source))
             if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    return {k: v for k, v in params.items() if k in names}


def write_html(notebook: Path, html: Path) -> Path:
    """The executed notebook as one HTML page: outputs, verdicts, figures embedded as
    data:image/png, readable in any browser without Jupyter."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    html.write_text(body, encoding="utf-8")
    return html


def run(profile: str = "ci", *, in_place: bool = False, weeks: list[str] | None = None,
        root: Path | None = None, overrides: dict[str, object] | None = None
        ) -> list[tuple[Path, float]]:
    import papermill

    root = root or Path(__file__).resolve().parents[2]
    reports = root / "reports"
    reports.mkdir(exist_ok=True)
    params = {**PROFILES[profile], **(overrides or {})}
    kernel, note = kernel_name()
    if note:
        print(note, flush=True)
    done = []
    for nb in notebooks(root):
        week = nb.parent.name
        if weeks and week not in weeks:
            continue
        out = nb if in_place else reports / f"{week}.ipynb"
        print(f"course: running {nb.relative_to(root)} ({profile}, kernel {kernel}) -> "
              f"{out.relative_to(root)}", flush=True)
        t0 = time.monotonic()
        papermill.execute_notebook(
            str(nb), str(out), parameters=notebook_parameters(nb, params),
            cwd=str(nb.parent), kernel_name=kernel, progress_bar=True)
        html = write_html(out, reports / f"{week}.html")
        done.append((out, time.monotonic() - t0))
        print(f"course: {week} done in {done[-1][1]:.0f} s; {html.relative_to(root)}",
              flush=True)
    return done


def _parse_param(text: str) -> tuple[str, object]:
    """NAME=VALUE, the value read as a Python literal when it is one (2.0, 30, None)."""
    import ast

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.course", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    parser.add_argument("--in-place", action="store_true",
                        help="re-execute the committed notebooks (CI parameters only)")
    parser.add_argument("--weeks", help="comma-separated, e.g. week1,week2")
    parser.add_argument("--param", "-p", action="append", type=_parse_param, default=[],
                        metavar="NAME=VALUE",
                        help="override one notebook parameter, e.g. -p traffic_rate=20")
    args = parser.parse_args(argv)
    if args.in_place and (args.profile != "ci" or args.param):
        parser.error("--in-place keeps the CI parameters that nbval replays; use --profile ci "
                     "and no --param")
    t0 = time.monotonic()
    done = run(args.profile, in_place=args.in_place,
               weeks=args.weeks.split(",") if args.weeks else None,
               overrides=dict(args.param))
    total = time.monotonic() - t0
    for path, secs in done:
        print(f"  {path}: {secs:.0f} s")
    print(f"course: {len(done)} notebooks in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
