"""One real chain: a tiny target -> Prometheus (+ the probe exporter) -> SLO rules at a tiny
time scale -> Alertmanager -> the webhook receiver. Errors start; the page must arrive; errors
stop; the page must resolve."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stack.runtime import ports
from stack.analysis.notifications import read_notifications
from stack.components.alerting import Alertmanager, WebhookReceiver
from stack.analysis.health import state
from stack.components.probe_exporter import ProbeExporter
from stack.components.prometheus import PrometheusServer
from stack.analysis.slo import SloSettings, write_rules
from stack.topology import PrometheusSpec

RATE = 50.0  # requests per second the fake API "serves"


class FakeApi:
    """Counters that grow with time like an API's: RATE req/s, all 500s while `failing`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0.0
        self.err = 0.0
        self.failing = False
        self.last = time.monotonic()

    def advance(self) -> None:
        with self.lock:
            now = time.monotonic()
            n = (now - self.last) * RATE
            self.last = now
            if self.failing:
                self.err += n
            else:
                self.ok += n

    def set_failing(self, failing: bool) -> None:
        self.advance()
        self.failing = failing

    def metrics(self) -> str:
        self.advance()
        sel = 'http_requests_total{route="/predict",method="POST",status="%s"} %f\n'
        return ("# TYPE http_requests_total counter\n" + sel % ("200", self.ok)
                + sel % ("500", self.err))


@pytest.fixture
def fake_api():
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/metrics":
                body, code = api.metrics().encode(), 200
            else:
                body, code = (b"down\n", 503) if api.failing else (b"healthy\n", 200)
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", ports.free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _wait(cond, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_probe_scraped_page_fires_reaches_webhook_and_resolves(tmp_path: Path, fake_api):
    api, api_port = fake_api
    # one playbook hour = 24 s: 5m = 2 s, 30m = 12 s, 1h = 24 s, 6h = 144 s
    spec = PrometheusSpec(scrape_interval_s=0.5, evaluation_interval_s=0.5, time_scale_s=24,
                          probe_timeout_s=0.4)
    slo = SloSettings.from_spec(spec)
    rules = write_rules(tmp_path / "prometheus" / "slo.rules.yml", slo)
    started = []
    try:
        hook = WebhookReceiver("webhook", tmp_path, ports.free_port())
        am = Alertmanager.from_spec("alertmanager", tmp_path, ports.free_port(), hook.url, spec)
        probe = ProbeExporter("probe", tmp_path, ports.free_port(),
                              f"http://127.0.0.1:{api_port}/health", timeout_s=0.4,
                              scrape_timeout_s=spec.scrape_interval_s)
        prom = PrometheusServer(
            "prometheus", tmp_path, ports.free_port(), spec,
            {"api": [f"api1=127.0.0.1:{api_port}"], "probe": [f"127.0.0.1:{probe.port}"]},
            [rules], am.url, job_options={"probe": probe.scrape_options()})
        for comp in (hook, am, probe, prom):
            started.append(comp)
            comp.start()
        for comp in started:
            comp.wait_ready()

        # the probe metric appears in Prometheus, and says the target is up
        _wait(lambda: prom.value('probe_success{job="probe"}') == 1, 15, "probe_success == 1")
        _wait(lambda: prom.value("slo:requests:rate5m"), 10, "the request rate recording rule")
        assert state(prom, slo).color == "green"

        t_err = time.time()
        api.set_failing(True)

        def paged():
            n = read_notifications(tmp_path)
            hit = n[(n["alertname"] == "SLOErrorBudgetBurnFast") & (n["status"] == "firing")]
            return float(hit["received"].min()) if len(hit) else None

        t_page = _wait(paged, 20, "the fast-burn page at the webhook")
        assert state(prom, slo).color == "red"
        to_page = t_page - t_err

        t_ok = time.time()
        api.set_failing(False)

        def resolved():
            n = read_notifications(tmp_path)
            hit = n[(n["alertname"] == "SLOErrorBudgetBurnFast") & (n["status"] == "resolved")
                    & (n["received"] > t_ok)]
            return float(hit["received"].min()) if len(hit) else None

        t_resolved = _wait(resolved, 20, "the fast-burn page to resolve")
        print(f"error start -> page: {to_page:.1f} s; errors end -> resolved: "
              f"{t_resolved - t_ok:.1f} s")
        assert to_page < 15
        notes = read_notifications(tmp_path)
        fast = notes[notes["alertname"] == "SLOErrorBudgetBurnFast"]
        assert set(fast["severity"]) == {"page"}
    finally:
        for comp in reversed(started):
            comp.stop()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_backfilled_history_fills_the_long_windows(tmp_path: Path):
    """Stopped, backfilled, started: the 6h window (360 s here) holds the history's rate."""
    s = SloSettings(time_scale_s=60)
    rules = write_rules(tmp_path / "slo.rules.yml", s)
    prom = PrometheusServer("prometheus", tmp_path, ports.free_port(), PrometheusSpec(),
                            {}, [rules])
    prom.start()
    try:
        prom.wait_ready()
        assert prom.value("slo:requests:rate6h") is None, "a fresh Prometheus has no past"
        prom.stop()
        prom.write_history(40.0, s.seconds("3d") + 10)
        prom.start()
        prom.wait_ready()
        got = _wait(lambda: prom.value("slo:requests:rate6h"), 15, "the 6h rate")
        assert 30.0 <= got <= 41.0, got
        assert 35.0 <= prom.value('sum(rate(http_requests_total{route="/predict"}[4320s]))')
    finally:
        prom.stop()
