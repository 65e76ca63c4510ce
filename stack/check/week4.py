"""The exercise checks of week 4: deploys that stop breaking prod."""
from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

from stack.check.core import (
    CLIENT_TIMEOUT_S, ExerciseFailed, task, load_module, get_function, call_with_deadline,
    expect_raised)

SMOKE_BAD = ("tampered", "constant", "nan_scores", "shuffled_labels")
SMOKE_DEADLINE_S = 60.0
_smoke_cache: dict[str, Path] = {}


def _smoke_models() -> Path:
    """A model registry with the active model v1, a good candidate v2 (retrained with
    another seed) and the course's bad models; built once per process, copied per check."""
    import atexit

    from stack.lab.lab import ensure_model
    from stack.model.train import train
    from stack.deploy.gate import make_bad_model

    if "dir" not in _smoke_cache:
        root = Path(tempfile.mkdtemp(prefix="exercise-models-"))
        atexit.register(shutil.rmtree, root, True)
        models = root / "models"
        shutil.copytree(ensure_model(), models)
        for kind in SMOKE_BAD:  # made from v1, the newest model so far
            make_bad_model(models, kind)
        train(models, version="v2", seed=8)
        _smoke_cache["dir"] = models
    return _smoke_cache["dir"]


@task("week4", "smoke", ("smoke.py",))
def check_smoke(folder: Path) -> str:
    from stack.deploy.gate import BAD_MODELS

    path = folder / "smoke.py"
    func = get_function(load_module(path), "smoke_test", path)
    source = _smoke_models()
    with tempfile.TemporaryDirectory(prefix="exercise-smoke-") as tmp:
        models = Path(tmp) / "models"
        shutil.copytree(source, models)
        verdicts: dict[str, bool] = {}
        for version in ["v2", *(f"bad-{k.replace('_', '-')}" for k in SMOKE_BAD)]:
            done, out, took = call_with_deadline(func, models, version, "v1", deadline_s=SMOKE_DEADLINE_S)
            if not done:
                raise ExerciseFailed(f"smoke_test({version!r}) ran over {SMOKE_DEADLINE_S:g} s",
                                     "a smoke test gates every deploy: keep it to seconds")
            expect_raised(out, f"smoke_test({version!r})")
            if not hasattr(out, "passed") or not hasattr(out, "checks"):
                raise ExerciseFailed(f"smoke_test({version!r}) returned {type(out).__name__}, "
                                     "without .passed and .checks",
                                     "return the starter's SmokeReport")
            verdicts[version] = bool(out.passed)
    if not verdicts["v2"]:
        raise ExerciseFailed("the good candidate v2 (retrained with another seed, its ROC AUC "
                             "0.01-0.02 below v1's) was rejected",
                             "compare quality with a margin: a retrained model is never "
                             "exactly as good as the active one")
    let_through = [v for v, ok in verdicts.items() if ok and v != "v2"]
    if let_through:
        kinds = [v[4:].replace("-", "_") for v in let_through]
        what = "; ".join(f"{v}: {BAD_MODELS[k][0]}" for v, k in zip(let_through, kinds))
        raise ExerciseFailed(f"{len(let_through)} of {len(SMOKE_BAD)} bad models passed ({what})",
                             _SMOKE_HINTS[kinds[0]])
    return (f"v2 accepted; all {len(SMOKE_BAD)} bad models rejected "
            f"({', '.join(SMOKE_BAD)})")


_SMOKE_HINTS = {
    "tampered": "check the file's sha256 against the manifest before unpickling it "
                "(stack.model.registry.load_verified does) and report the failure",
    "constant": "score the held-out set (stack.deploy.gate.holdout_set()) and reject scores that "
                "are all the same",
    "nan_scores": "score the whole held-out set and reject any score that is not finite",
    "shuffled_labels": "compare ROC AUC on the held-out set with the active model's and "
                       "reject a drop of more than 0.02",
}

ROLLOUT_DEADLINE_S = 40.0
ONE_AT_A_TIME = ("restart one replica at a time, and only once the other serves: take it out "
                 "of nginx (set_backends_down), restart, wait until ready, put it back")


@task("week4", "rollout", ("rollout.py",))
def check_rollout(folder: Path) -> str:
    from stack.analysis.records import load_records
    from stack.lab.lab import Lab
    from stack.lab.traffic import Traffic

    path = folder / "rollout.py"
    func = get_function(load_module(path), "restart_replicas", path)
    with Lab("after") as lab:
        before = {api.name: api.proc.pid for api in lab.apis}
        with Traffic(lab.public_url, lab.run_dir, rate=30, duration=ROLLOUT_DEADLINE_S,
                     name="exercise-rollout", progress=False, idempotency_keys=True,
                     timeout=CLIENT_TIMEOUT_S,
                     n_customers=lab.topology.postgres.n_customers) as traffic:
            while traffic.elapsed < 1.0:
                time.sleep(0.02)
            done, out, took = call_with_deadline(func, lab, deadline_s=ROLLOUT_DEADLINE_S - 4)
            t_end = traffic.elapsed + 1.5
            while traffic.elapsed < t_end:
                time.sleep(0.02)
            result = traffic.stop()
        after = {api.name: api.proc.pid if api.proc else None for api in lab.apis}
        ready = {api.name: api.ready() for api in lab.apis}
        df = load_records(result.path)
    if not done:
        raise ExerciseFailed(f"restart_replicas() did not return within "
                             f"{ROLLOUT_DEADLINE_S - 4:g} s",
                             "wait for each replica with a deadline (lab.restart waits until "
                             "it is ready)")
    expect_raised(out, "restart_replicas()")
    same = [n for n in before if before[n] == after[n]]
    if same:
        raise ExerciseFailed(f"{', '.join(same)} still run(s) the old process (pid unchanged)",
                             "restart every replica in lab.apis")
    not_ready = [n for n, ok in ready.items() if not ok]
    if not_ready:
        raise ExerciseFailed(f"{', '.join(not_ready)} not ready after the restart",
                             "wait until each replica is ready before you move on")
    load = df[df["kind"] == "load"]
    bad = load[(load["error"] != "") | ~load["status"].between(200, 299)]
    if len(bad):
        how = bad["status"].astype(str).where(bad["status"] > 0, bad["error"]).value_counts()
        raise ExerciseFailed(f"{len(bad)} failed of {len(load)} requests during the restart "
                             f"({', '.join(f'{n} {k}' for k, n in how.items())})",
                             ONE_AT_A_TIME)
    if result.waited_503:
        # nginx answers 503 with Retry-After when no replica can take a request, and the
        # client re-sends a keyed POST after it: the request ends well, its user waited
        raise ExerciseFailed(f"{result.waited_503} of {len(load)} requests were answered 503 "
                             "(no replica could take them) and went through only because the "
                             "client waited its Retry-After and sent them again: every replica "
                             "was out at once", ONE_AT_A_TIME)
    return (f"both replicas restarted in {took:.1f} s; 0 failed of {len(load)} requests")



# -- communicate: the updates of a measured incident --------------------------------------------
INTERNAL_NAMES = ("api1", "api2", "nginx", "postgres", "patroni", "redis", "etcd", "replica",
                  "standby", "prometheus")


def _pct_near(text: str, share: float) -> bool:
    from stack.check.incident import PCT_RE, SHARE_TOLERANCE

    return any(abs(float(p) / 100 - share) <= SHARE_TOLERANCE for p in PCT_RE.findall(text))


def _times_near(text: str, m, *ts: float) -> list[float]:
    """The measured times (t from the start) that no HH:MM:SS in `text` comes near."""
    from stack.check.incident import clock_times, near

    stated = clock_times(text, m.start_wall)
    return [t for t in ts if not any(near(s, m.wall(t)) for s in stated)]


def _section(parts: dict[str, str], name: str, file: str) -> str:
    for key, text in parts.items():
        if key.startswith(name):
            return text
    raise ExerciseFailed(f"{file} has no '## {name.capitalize()}' section",
                         "keep the starter's three sections: Status page, Stakeholders, "
                         "Hand-over")


def _need_times(where: str, text: str, m, what: dict[str, float]) -> None:
    from stack.check.incident import utc

    missing = _times_near(text, m, *what.values())
    if missing:
        names = [k for k, t in what.items() if t in missing]
        hint = ("the first and the last failed request are the first and the last load row "
                "of records.csv with an error; their time is start_wall + t, as UTC HH:MM:SS "
                f"(the first is {utc(m.wall(m.first_failure_t))[:5]}:..)")
        if "page" in names:
            hint = "pages.csv says when the page fired (t from the start); " + hint
        raise ExerciseFailed(f"{where}: no time within 2 s of the measured {', '.join(names)}",
                             hint)


@task("week4", "communicate", ("update.md",))
def check_communicate(folder: Path) -> str:
    from stack.check.incident import (check_no_placeholders, labelled, measure, sections,
                                      strip_comments, utc)

    text = strip_comments((folder / "update.md").read_text(encoding="utf-8"))
    check_no_placeholders(text, "update.md")
    m = measure()
    parts = sections(text)
    status = _section(parts, "status page", "update.md")
    stake = _section(parts, "stakeholders", "update.md")
    hand = _section(parts, "hand-over", "update.md")
    span = {"start": m.first_failure_t, "end": m.last_failure_t}
    share_hint = ("the share of load requests that failed between the first and the last "
                  "failed one (failed / requests sent in that window), within 1 point")

    # the status page: what users saw, when, how many; no internal names
    _need_times("status page", status, m, span)
    if not _pct_near(status, m.window_share):
        raise ExerciseFailed("status page: the share of failed requests is not the measured "
                             "one", share_hint)
    if re.search(r"\ball users\b", status, re.IGNORECASE):
        raise ExerciseFailed("status page: says all users were affected",
                             "about one request in ten failed: some users, not all")
    named = [n for n in INTERNAL_NAMES if re.search(rf"\b{n}", status, re.IGNORECASE)]
    if named:
        raise ExerciseFailed(f"status page: names the internal part(s) {', '.join(named)}",
                             "a status page says what users saw and what was done, in their "
                             "words; component names go in the hand-over")
    # the stakeholder note: the impact line with the same facts
    impact = labelled(stake, "Impact") or ""
    _need_times("stakeholders' Impact line", impact, m, span)
    if not _pct_near(impact, m.window_share):
        raise ExerciseFailed("stakeholders' Impact line: the share of failed requests is not "
                             "the measured one", share_hint)
    counts = re.search(r"(\d+)\s+of\s+(\d+)", impact)
    if counts and (int(counts.group(1)), int(counts.group(2))) != (m.window_failed,
                                                                   m.window_requests):
        raise ExerciseFailed(f"stakeholders' Impact line: {counts.group(0)} requests is not "
                             "what the records hold",
                             "count the load rows sent between the first and the last failed "
                             "one, and the failed ones among them")
    # the hand-over: the component, and a timeline with the key moments
    component = (labelled(hand, "Component") or "").strip().strip(".`*").lower()
    if not re.search(rf"\b{re.escape(m.component)}\b", component):
        raise ExerciseFailed(f"hand-over: Component '{component}' is not the part that failed "
                             "the requests",
                             "records.csv names the replica that answered each request "
                             "(backend): which one answered the failed ones?")
    timeline = labelled(hand, "Timeline") or ""
    _need_times("hand-over's Timeline", timeline, m,
                {"first failed request": m.first_failure_t, "page": m.page_fired_t,
                 "last failed request": m.last_failure_t})
    return (f"the three updates state the measured start {utc(m.wall(m.first_failure_t))}, "
            f"end {utc(m.wall(m.last_failure_t))} UTC, {m.window_share:.1%} failed and the "
            f"component {m.component}; the status page names no internal part")


# -- postmortem: timeline, impact and causes of a measured incident ------------------------------
# the events a post-mortem's timeline must hold: (name, words one of which the line needs,
# how to find the measured time); times come from the records, the pages and the timeline
_PM_EVENTS = (
    ("api2 stopping to answer", r"api2", "api2_down"),
    ("the first failed request", r"fail|error|500", "first_failure"),
    ("the page firing", r"page|paged|alert", "page_fired"),
    ("the last failed request", r"fail|error|500|last|stopp|recover", "last_failure"),
    ("the page resolving", r"resolv", "page_resolved"),
)


def _event_times(m, folder: Path) -> dict[str, float]:
    from stack.check.incident import T_RE

    api2 = None
    for line in (folder / "timeline.txt").read_text().splitlines():
        if "api2 stopped answering" in line:
            api2 = float(T_RE.search(line).group(1))
            break
    return {"api2_down": api2, "first_failure": m.first_failure_t,
            "page_fired": m.page_fired_t, "last_failure": m.last_failure_t,
            "page_resolved": m.page_resolved_t}


def _line_near(lines: list[tuple[float, str]], wall: float, words: str) -> bool:
    from stack.check.incident import near

    return any(near(w, wall) and re.search(words, text, re.IGNORECASE) for w, text in lines)


@task("week4", "postmortem", ("postmortem.md",))
def check_postmortem(folder: Path) -> str:
    from stack.check.incident import (TRUTH, check_no_placeholders, clock_times, incident_dir,
                                      labelled, measure, near, sections, strip_comments, utc,
                                      PCT_RE, TIME_RE)

    text = strip_comments((folder / "postmortem.md").read_text(encoding="utf-8"))
    check_no_placeholders(text, "postmortem.md")
    m = measure()
    parts = sections(text)
    impact = _section(parts, "impact", "postmortem.md")
    causes = _section(parts, "causes", "postmortem.md")
    timeline = _section(parts, "timeline", "postmortem.md")

    # impact: start, end, counts, share, budget
    for label, t in (("Start", m.first_failure_t), ("End", m.last_failure_t)):
        stated = clock_times(labelled(impact, label) or "", m.start_wall)
        if not stated or not near(stated[0], m.wall(t)):
            raise ExerciseFailed(f"Impact: the {label} time is not within 2 s of the measured "
                                 f"one", f"{label}: the {'first' if label == 'Start' else 'last'}"
                                 " load row of records.csv with an error, start_wall + t, as "
                                 "UTC HH:MM:SS")
    failed_line = labelled(impact, "Failed requests") or ""
    counts = re.search(r"(\d[\d,]*)\s+of\s+(\d[\d,]*)", failed_line)
    got = tuple(int(c.replace(",", "")) for c in counts.groups()) if counts else None
    if got != (m.failed, m.requests):
        raise ExerciseFailed(f"Impact: Failed requests says {counts.group(0) if counts else 'no N of M'}",
                             "count the load rows of the whole run, and those with an error "
                             "(the probe's rows are not user requests)")
    pcts = [float(p) / 100 for p in PCT_RE.findall(failed_line)]
    if not any(abs(p - m.run_share) <= 0.002 for p in pcts):
        raise ExerciseFailed("Impact: the failed share does not match the counts",
                             "failed / requests of the whole run, as a percentage with one "
                             "decimal")
    budget = [float(p) / 100 for p in PCT_RE.findall(labelled(impact, "Error budget used") or "")]
    if not any(abs(b - m.budget_used) <= max(0.003, 0.1 * m.budget_used) for b in budget):
        raise ExerciseFailed("Impact: the error budget used is not the measured one",
                             "the 30-day budget at the lab's time scale: 30 days are 720 x "
                             "time_scale_s seconds of traffic at the run's rate; the budget "
                             "is (1 - slo_target) of those requests; failed / budget")
    detected = (labelled(impact, "Detected by") or "").lower()
    probe = re.search(r"\bprobe\b", detected)
    signal = re.search(r"page|alert|health|red\b|yellow|monitor", detected)
    if probe and (not signal or probe.start() < signal.start()):
        raise ExerciseFailed("Impact: Detected by names the uptime probe",
                             "look at the probe's rows in records.csv: did it ever fail? A "
                             "share of 500s on POST /predict leaves a GET probe green")
    if not re.search(r"page|alert|health|red|yellow|monitor", detected):
        raise ExerciseFailed("Impact: Detected by does not name what told a person first",
                             "pages.csv and health_states.csv: which signal came first after "
                             "the first failed request?")

    # timeline: the key moments at their measured times, in order
    lines = []
    for raw in timeline.splitlines():
        mt = TIME_RE.search(raw)
        if mt:
            lines.append((clock_times(mt.group(0), m.start_wall)[0], raw[mt.end():]))
    if [w for w, _ in lines] != sorted(w for w, _ in lines):
        raise ExerciseFailed("Timeline: the lines are not in time order",
                             "sort the events by their time")
    times = _event_times(m, incident_dir())
    missing = [name for name, words, key in _PM_EVENTS
               if times[key] is not None and not _line_near(lines, m.wall(times[key]), words)]
    if missing:
        raise ExerciseFailed(f"Timeline: {len(missing)} of {len(_PM_EVENTS)} key moments are "
                             f"missing or more than 2 s off: {', '.join(missing)}",
                             "each has one line '- HH:MM:SS what happened' at the time the "
                             "records, pages.csv or timeline.txt give")

    # causes: the component and what was wrong with it; what let it through
    (fault, component), (other_fault, other) = TRUTH["trigger"], TRUTH["contributing"]
    root = " ".join(filter(None, [labelled(causes, "Trigger"), labelled(causes, "Root cause")]))
    if not re.search(rf"\b{component}\b", root, re.IGNORECASE):
        raise ExerciseFailed("Causes: Trigger and Root cause do not name the component that "
                             "failed the requests",
                             "records.csv's backend column says which replica answered every "
                             "failed request")
    if not re.search(r"bug|code|release|deploy|exception|500|internal error", root,
                     re.IGNORECASE):
        raise ExerciseFailed("Causes: Root cause does not say what was wrong with "
                             f"{component}",
                             "the failed requests got HTTP 500 from a replica that was up and "
                             "answering: the application's own code failed them. What change "
                             "brings new code?")
    if re.search(r"database|postgres|\bdb\b|memory|crash|network|timeout", root,
                 re.IGNORECASE):
        raise ExerciseFailed("Causes: Root cause blames a part the records clear",
                             "every failure is an HTTP 500 answered by the replica, quickly: "
                             "no timeout, no refused connection, no database error")
    contributing = labelled(causes, "Contributing") or ""
    if not (re.search(rf"\b{other}\b", contributing, re.IGNORECASE) and
            re.search(r"froze|frozen|freez|hang|hung|stopped|down|unrespons|answer",
                      contributing, re.IGNORECASE)):
        raise ExerciseFailed("Causes: Contributing does not say what happened to "
                             f"{other}", "health_states.csv turned yellow before the first "
                             "failure: why did one replica serve every request?")
    return (f"impact ({m.failed} of {m.requests} failed, {m.budget_used:.1%} of the budget, "
            f"{utc(m.wall(m.first_failure_t))} to {utc(m.wall(m.last_failure_t))} UTC), "
            f"{len(_PM_EVENTS)} key moments and the causes ({fault.replace('_', ' ')} on "
            f"{component}, {other_fault} of {other}) match the measured incident")
