"""Week 4's hand-made deploy in the BEFORE world: what users got, and the post-mortem filled
from it, on synthetic records with known answers."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stack.course.week4 import HandDeploy, fill_postmortem, incident_facts

TEMPLATE = Path(__file__).resolve().parent.parent / "docs" / "postmortem-template.md"


def _hand_deploy() -> HandDeploy:
    """Copy at t=3, restart fails t=3.0..3.9, bad scores t=4..10, put back at t=11, restart
    fails t=11.1..11.8, good scores again from t=12."""
    load = ([(t / 10, 200, "") for t in range(0, 30)]
            + [(3.0 + t / 10, 0, "connect") for t in range(10)]
            + [(4.0 + t / 10, 200, "") for t in range(70)]
            + [(11.1 + t / 10, 0, "connect") for t in range(8)]
            + [(12.0 + t / 10, 200, "") for t in range(30)])
    records = pd.DataFrame([{"kind": "load", "t": t, "status": s, "error": e, "lag_s": 0.001}
                            for t, s, e in load])
    ok = records[records["status"] == 200]
    wrong = ok["t"].between(4.0, 10.95)
    scores = pd.DataFrame({"t": ok["t"], "served": 0.05,
                           "good": [0.9 if i % 10 == 0 else 0.05 for i in range(len(ok))],
                           "wrong": wrong.to_numpy()})
    scores.loc[~scores["wrong"], "served"] = scores.loc[~scores["wrong"], "good"]
    steps = [(3.0, "copied and restarted"), (11.0, "put back and restarted")]
    return HandDeploy("hand-made deploy", {"version": "v1"}, records, 3.0, 11.9,
                      scores=scores.reset_index(drop=True), steps=steps)


def test_impact_counts_the_wrong_scores_and_the_review_flags():
    i = _hand_deploy().impact()
    assert (i["wrong"], i["during"], i["first_t"], i["last_t"]) == (70, 70, 4.0, 10.9)
    assert i["flagged_good"] == 7 and i["flagged_served"] == 0 and i["missed"] == 7


def test_postmortem_is_in_time_order_and_tells_one_story():
    run = _hand_deploy()
    pm = fill_postmortem(TEMPLATE, run, incident_facts(run))
    timeline = pm[pm.index("## Timeline"):pm.index("## Causes")]
    ts = [float(line.split("t+")[1].split("s:")[0]) for line in timeline.splitlines()
          if line.startswith("- t+")]
    assert ts == sorted(ts) and len(ts) == 7, timeline
    assert "10 requests failed" in timeline and "8 requests failed" in timeline
    assert "the first answer from the good model again" in timeline
    assert "- Wrong scores: 70 of 70 predictions" in pm
    assert "- Failed requests: 18 of 148" in pm
    assert "integrity check refused" not in pm  # it did not: the manifest was edited to pass
    assert "{" not in pm.replace("{title}", "")  # every field filled
