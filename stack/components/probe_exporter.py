"""The uptime probe: the real prometheus-blackbox-exporter (Debian package), configured by the
lab. Each scrape of ``/probe?module=http_2xx&target=URL`` performs one GET against the target
and reports what a user would have seen; Prometheus supplies the clock (one scrape, one probe).

Metrics the lab reads: ``probe_success`` (1 when the answer was a 2xx within the module's
timeout), ``probe_duration_seconds`` and ``probe_http_status_code`` (0 when no answer came).
The Prometheus job stays ``probe`` (`scrape_options()` gives its path and parameters), so
``probe_success{job="probe"}`` means what it always meant.

Timeouts: the exporter probes for min(module timeout, scrape timeout - ``--timeout-offset``),
the scrape timeout coming from Prometheus in the X-Prometheus-Scrape-Timeout-Seconds header.
The module's timeout must be below the scrape timeout (else the scrape times out first and the
sample is lost instead of reading 0); the offset is set so that the module's timeout is the one
that counts. The port is the lab's (the Debian unit may hold 9115).
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlencode

import yaml

from stack.analysis.slo import prom_duration
from stack.components.base import HttpService
from stack.errors import ComponentFailed, ConfigError
from stack.runtime import binaries

BINARY = "prometheus-blackbox-exporter"
MODULE = "http_2xx"
DEFAULT_OFFSET_S = 0.5  # the exporter's own default, when the scrape timeout is not known


def render_config(timeout_s: float) -> str:
    """blackbox.yml: one HTTP module, GET, 2xx within `timeout_s`, IPv4 (the lab's loopback)."""
    cfg = {"modules": {MODULE: {"prober": "http", "timeout": prom_duration(timeout_s),
                                "http": {"method": "GET", "valid_status_codes": [],
                                         "preferred_ip_protocol": "ip4",
                                         "ip_protocol_fallback": False}}}}
    return "# rendered by the lab: the uptime probe's module\n" + yaml.safe_dump(
        cfg, sort_keys=False)


def timeout_offset(timeout_s: float, scrape_timeout_s: float | None) -> float:
    """--timeout-offset that makes the module's timeout the one that counts; a ConfigError
    when the module's timeout is not below the scrape timeout."""
    if scrape_timeout_s is None:
        return DEFAULT_OFFSET_S
    if not timeout_s < scrape_timeout_s:
        raise ConfigError(f"the probe's timeout ({timeout_s:g} s) must be below the scrape "
                          f"timeout ({scrape_timeout_s:g} s)", field="prometheus.probe_timeout_s")
    return round(scrape_timeout_s - timeout_s, 3)


class ProbeExporter(HttpService):
    """prometheus-blackbox-exporter in the lab's run directory, probing `target`. Ready when
    GET /-/healthy answers 200 (that does not probe the target)."""

    kind = "probe"
    ready_path = "/-/healthy"

    def __init__(self, name: str, run_dir: Path, port: int, target: str,
                 timeout_s: float = 0.8, start_deadline_s: float = 10.0,
                 scrape_timeout_s: float | None = None):
        super().__init__(name, run_dir, port, start_deadline_s)
        self.target = target
        self.timeout_s = timeout_s
        self.offset_s = timeout_offset(timeout_s, scrape_timeout_s)

    @property
    def conf_path(self) -> Path:
        return self.dir / "blackbox.yml"

    @property
    def probe_url(self) -> str:
        """One probe by hand, as Prometheus asks for it."""
        return f"{self.address}/probe?{urlencode({'module': MODULE, 'target': self.target})}"

    def scrape_options(self) -> dict[str, object]:
        """The Prometheus job's path and parameters for this exporter."""
        return {"metrics_path": "/probe", "params": {"module": [MODULE], "target": [self.target]}}

    def prepare(self) -> None:
        """Write blackbox.yml and have the exporter check it (`--config.check`)."""
        super().prepare()
        self.conf_path.write_text(render_config(self.timeout_s))
        res = subprocess.run([binaries.find(BINARY), f"--config.file={self.conf_path}",
                              "--config.check"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise ComponentFailed(self.name, f"{BINARY} rejected {self.conf_path}",
                                  str(self.conf_path), (res.stdout + res.stderr).strip())

    def argv(self) -> list[str]:
        return [binaries.find(BINARY), f"--config.file={self.conf_path}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--timeout-offset={self.offset_s:g}", "--log.level=warn"]
