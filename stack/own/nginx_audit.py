"""`stackctl audit nginx.conf`: week 2's nginx findings as a static check of a team's own
config. `nginx -t` runs first (a config nginx rejects gets nginx's own message, nothing else);
then the config is read with its includes and each finding names the file, the line and the fix.

The findings are the ones week 2 measured on a live lab (stack/course/audit.py):

- keepalive: `keepalive N` in an upstream does nothing unless the locations that proxy to it
  speak HTTP/1.1 without `Connection: close` (proxy_http_version 1.1, an empty Connection);
- post-retry: a POST whose replica hangs or dies after the request was sent is not retried
  (nginx's default leaves out non-idempotent requests), so the client gets the 502/504; or the
  opposite, `non_idempotent` for every POST, which runs a request twice when the first replica
  had already done it. The fix is both: retry a POST only when it carries an Idempotency-Key;
- static-health: a /health that nginx answers itself says "healthy" with every replica down;
- no-zone: without a shared `zone`, every worker counts failures on its own, so a dead replica
  gets max_fails attempts per worker;
- fail-timeout: when a shared dependency (the database) fails, every replica answers 5xx or
  times out, nginx marks them all failed, and keeps them out for fail_timeout after the
  database is back;
- timeout-order: nginx must give up on a replica before the client gives up on nginx
  (proxy_read_timeout below the client's timeout), and close an idle upstream connection before
  the app does (upstream keepalive_timeout below the app's keep-alive).
"""
from __future__ import annotations

import glob
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from stack.errors import ConfigError, StackError
from stack.own.durations import format_duration
from stack.runtime import binaries

# nginx's defaults where a directive is absent
DEFAULTS = {"proxy_http_version": "1.0", "proxy_next_upstream": "error timeout",
            "proxy_read_timeout": "60s", "proxy_connect_timeout": "60s",
            "keepalive_timeout": "60s", "max_fails": "1", "fail_timeout": "10s"}
# a replica that answered one of these (or timed out) counts as failed, if the location retries it
FAILURE_STATUSES = ("http_500", "http_502", "http_503", "http_504", "http_429")
MAX_FAIL_TIMEOUT_S = 5.0  # how long a recovered database may stay hidden behind a benched upstream
CLIENT_TIMEOUT_S = 5.0  # the course's load client; many HTTP clients default to a few seconds
APP_KEEPALIVE_S = 5.0  # uvicorn's --timeout-keep-alive default


@dataclass
class Directive:
    """One directive: its name, arguments, where it is, and its block (None: no block)."""

    name: str
    args: list[str]
    file: str
    line: int
    block: list["Directive"] | None = None

    def children(self, name: str) -> list["Directive"]:
        return [d for d in self.block or [] if d.name == name]

    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Finding:
    """One problem: its kind, where, what is wrong and what to write instead."""

    kind: str
    file: str
    line: int
    problem: str
    fix: str
    facts: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"{self.file}:{self.line}: [{self.kind}] {self.problem}", f"    fix: {self.fix}"]


# -- reading the config ------------------------------------------------------------------------
_TOKEN = re.compile(r"""\s+|#[^\n]*|"((?:\\.|[^"\\])*)"|'((?:\\.|[^'\\])*)'|([{};])|((?:\\.|[^\s{};"'#])+)""")


def _tokens(text: str, file: str) -> list[tuple[str, int, bool]]:
    """(token, line, is_punctuation) of nginx config text."""
    out, pos, line = [], 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConfigError(f"cannot read the config near {text[pos:pos + 20]!r}", source=file,
                              line=line)
        if m[1] is not None or m[2] is not None:
            out.append((m[1] if m[1] is not None else m[2], line, False))
        elif m[3]:
            out.append((m[3], line, True))
        elif m[4]:
            out.append((m[4], line, False))
        line += m[0].count("\n")
        pos = m.end()
    return out


def parse(path: str | Path, conf_dir: Path | None = None, _depth: int = 0) -> list[Directive]:
    """The directives of a config file, `include`s expanded in place (relative paths from the
    main file's folder, as nginx resolves them)."""
    path = Path(path)
    conf_dir = conf_dir or path.resolve().parent
    if _depth > 20:
        raise ConfigError("includes nest deeper than 20 levels", source=str(path))
    text = path.read_text(encoding="utf-8", errors="replace")
    toks = _tokens(text, str(path))
    pos = 0

    def block(top: bool) -> list[Directive]:
        nonlocal pos
        out: list[Directive] = []
        words: list[tuple[str, int]] = []
        while pos < len(toks):
            tok, line, punct = toks[pos]
            pos += 1
            if not punct:
                words.append((tok, line))
                continue
            if tok == "}":
                if top:
                    raise ConfigError("unexpected '}'", source=str(path), line=line)
                return out
            if not words:
                raise ConfigError(f"unexpected {tok!r}", source=str(path), line=line)
            d = Directive(words[0][0], [w for w, _ in words[1:]], str(path), words[0][1])
            words = []
            if tok == "{":
                d.block = block(False)
            if d.name == "include" and d.block is None and d.args:
                pattern = d.args[0] if Path(d.args[0]).is_absolute() else str(conf_dir / d.args[0])
                for inc in sorted(glob.glob(pattern)):
                    out.extend(parse(inc, conf_dir, _depth + 1))
                continue
            out.append(d)
        if not top:
            raise ConfigError("a block is not closed ('}' missing)", source=str(path))
        return out

    return block(True)


def seconds(value: str) -> float:
    """An nginx time ("10s", "1500ms", "1m", "30") in seconds."""
    total, rest = 0.0, value.strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000,
             "y": 31536000}
    for num, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|M|y)?", rest):
        total += int(num) * units.get(unit or "s", 1)
    return total


# -- nginx -t --------------------------------------------------------------------------------
def is_fragment(text: str) -> bool:
    """A file of server/upstream blocks (a sites-available file), not a whole nginx.conf."""
    code = re.sub(r"#[^\n]*", "", text)
    return (not re.search(r"(^|[;{}\s])http\s*\{", code)
            and bool(re.search(r"(^|[;{}\s])(server|upstream)\s*[^;]*\{", code)))


def nginx_test(path: Path, fragment: bool) -> str:
    """Run `nginx -t` on the file (a fragment inside a minimal http block); return nginx's
    word on success, raise a ConfigError with nginx's own message on rejection."""
    nginx = binaries.find("nginx")
    with tempfile.TemporaryDirectory(prefix="stackctl-audit-") as tmp:
        conf = path.resolve()
        if fragment:
            # nginx resolves relative includes from the main file's folder: mirror the
            # fragment's folder (symlinks) beside the wrapper so they resolve as they would
            run = Path(tmp) / ".stackctl-audit"
            run.mkdir()
            for entry in sorted(conf.parent.iterdir())[:1000]:
                (Path(tmp) / entry.name).symlink_to(entry)
            conf = Path(tmp) / ".stackctl-audit.conf"
            conf.write_text(f"pid {run}/nginx.pid;\nerror_log {run}/error.log;\n"
                            f"events {{}}\nhttp {{\n    include {path.resolve()};\n}}\n")
        res = subprocess.run([nginx, "-t", "-q", "-p", f"{tmp}/", "-c", str(conf)],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             timeout=30)
    said = [ln.strip() for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
    if res.returncode != 0:
        # "2024/05/01 12:00:00 [emerg] 12#12: unknown directive ..." -> "nginx: [emerg] ..."
        said = [re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: ", r"nginx: \1 ", ln)
                for ln in said]
        worst = [ln for ln in said if "[emerg]" in ln or "[alert]" in ln] or said or ["no output"]
        raise ConfigError(f"nginx -t rejected it: {worst[0]}", source=str(path))
    return "nginx -t: the syntax is ok" + (" (checked inside an http block)" if fragment else "")


# -- the findings ------------------------------------------------------------------------------
@dataclass
class _Loc:
    """A location (or named location) with the chain of blocks it inherits from."""

    loc: Directive
    chain: list[Directive]  # innermost first: the location(s), its server, http

    def get(self, name: str) -> Directive | None:
        for blk in self.chain:
            found = blk.children(name)
            if found:
                return found[-1]
        return None

    def value(self, name: str) -> str:
        d = self.get(name)
        return " ".join(d.args) if d else DEFAULTS.get(name, "")

    def headers(self) -> dict[str, str]:
        """proxy_set_header as nginx applies it: the innermost level that sets any wins whole."""
        for blk in self.chain:
            found = blk.children("proxy_set_header")
            if found:
                return {d.args[0].lower(): (d.args[1] if len(d.args) > 1 else "") for d in found
                        if d.args}
        return {}

    def upstream(self) -> str | None:
        d = self.loc.children("proxy_pass")
        if not d or not d[-1].args:
            return None
        m = re.match(r"^https?://([^/:$]+)", d[-1].args[0])
        return m[1] if m else None


def _locations(blk: Directive, chain: list[Directive]) -> list[_Loc]:
    out = []
    for d in blk.block or []:
        if d.name == "location" and d.block is not None:
            inner = [d, *chain]
            out.append(_Loc(d, inner))
            out.extend(_locations(d, inner))
    return out


def _servers(top: list[Directive]) -> list[tuple[Directive, Directive]]:
    """(http, server) pairs; a fragment's top level stands for its http block."""
    https = [d for d in top if d.name == "http"] or [Directive("http", [], "", 0, top)]
    return [(h, s) for h in https for s in h.children("server")]


def _upstreams(top: list[Directive]) -> dict[str, Directive]:
    https = [d for d in top if d.name == "http"] or [Directive("http", [], "", 0, top)]
    return {u.args[0]: u for h in https for u in h.children("upstream") if u.args}


def _server_params(server: Directive) -> dict[str, str]:
    params = {"max_fails": DEFAULTS["max_fails"], "fail_timeout": DEFAULTS["fail_timeout"]}
    for arg in server.args[1:]:
        key, sep, value = arg.partition("=")
        if sep:
            params[key] = value
    return params


def _workers(top: list[Directive]) -> str:
    found = [d for d in top if d.name == "worker_processes"]
    return found[-1].args[0] if found and found[-1].args else "1"


def findings(top: list[Directive], *, client_timeout_s: float = CLIENT_TIMEOUT_S,
             app_keepalive_s: float = APP_KEEPALIVE_S,
             max_fail_timeout_s: float = MAX_FAIL_TIMEOUT_S) -> list[Finding]:
    """Every finding in a parsed config (a pure function of it and the three times)."""
    out: list[Finding] = []
    upstreams = _upstreams(top)
    used: dict[str, list[_Loc]] = {}
    for http, server in _servers(top):
        locs = _locations(server, [server, http])
        proxied = [lc for lc in locs if lc.upstream()]
        for lc in proxied:
            used.setdefault(lc.upstream() or "", []).append(lc)
        out += _keepalive(proxied, upstreams)
        out += _post_retry(server, proxied)
        out += _static_health(server, locs, upstreams)
        out += _read_timeout(proxied, client_timeout_s)
    workers = _workers(top)
    for name, up in upstreams.items():
        servers = up.children("server")
        counted = [s for s in servers if _server_params(s)["max_fails"] != "0"]
        if not counted:
            continue
        if not up.children("zone") and workers != "1" and len(servers) > 1:
            out.append(Finding(
                "no-zone", up.file, up.line,
                f"upstream {name} has no shared zone: each of the {workers} worker processes "
                "counts failures on its own, so a dead replica gets max_fails attempts per "
                "worker (week 2 counted them in nginx's error log)",
                f"add `zone {name} 64k;` inside `upstream {name} {{ ... }}`"))
        for s in counted:
            p = _server_params(s)
            ft = seconds(p["fail_timeout"])
            if ft > max_fail_timeout_s:
                out.append(Finding(
                    "fail-timeout", s.file, s.line,
                    f"fail_timeout={p['fail_timeout']} (max_fails={p['max_fails']}"
                    + (")" if "fail_timeout=" in " ".join(s.args) else ", nginx's defaults)")
                    + ": when the "
                    "database fails, every replica answers 5xx or times out, nginx marks each "
                    f"failed and keeps it out for {format_duration(ft)}, so the outage outlives "
                    "the database's by up to that long",
                    f"fail_timeout=1s (at most {format_duration(max_fail_timeout_s)}); and leave "
                    "http_500 out of proxy_next_upstream so the app's own errors do not bench "
                    "a replica", {"fail_timeout_s": ft}))
        ka = up.children("keepalive")
        if ka and any(_reuses(lc) for lc in used.get(name, [])):
            kt = up.children("keepalive_timeout")
            value = kt[-1].args[0] if kt and kt[-1].args else DEFAULTS["keepalive_timeout"]
            if seconds(value) >= app_keepalive_s:
                d = kt[-1] if kt else ka[-1]
                out.append(Finding(
                    "timeout-order", d.file, d.line,
                    f"nginx keeps idle connections to the app for {value}"
                    + ("" if kt else " (nginx's default)")
                    + f", longer than the app keeps them ({format_duration(app_keepalive_s)}): "
                    "a request nginx sends on a connection the app is closing fails with 502",
                    f"`keepalive_timeout {max(1, int(app_keepalive_s) - 1)}s;` in upstream "
                    f"{name} (below the app's keep-alive), or raise the app's (uvicorn "
                    "--timeout-keep-alive 75)", {"keepalive_timeout_s": seconds(value)}))
    return sorted(out, key=lambda f: (f.file, f.line, f.kind))


def _reuses(lc: _Loc) -> bool:
    return lc.value("proxy_http_version") == "1.1" and lc.headers().get("connection", None) == ""


def _keepalive(proxied: list[_Loc], upstreams: dict[str, Directive]) -> list[Finding]:
    out = []
    for lc in proxied:
        up = upstreams.get(lc.upstream() or "")
        if up is None or not up.children("keepalive") or _reuses(lc):
            continue
        missing = []
        if lc.value("proxy_http_version") != "1.1":
            missing.append("`proxy_http_version 1.1;`")
        if lc.headers().get("connection", None) != "":
            missing.append('`proxy_set_header Connection "";`')
        ka = up.children("keepalive")[-1]
        pp = lc.loc.children("proxy_pass")[-1]
        out.append(Finding(
            "keepalive", pp.file, pp.line,
            f"upstream {up.args[0]} sets keepalive {' '.join(ka.args)} ({ka.where()}), but "
            f"location {' '.join(lc.loc.args)} speaks HTTP/"
            f"{lc.value('proxy_http_version')} with 'Connection: close' to it: nginx opens a "
            "new connection per request and keeps none",
            f"add {' and '.join(missing)} to the server block (or this location); note that "
            "a location's own proxy_set_header lines replace the server's"))
    return out


def _post_retry(server: Directive, proxied: list[_Loc]) -> list[Finding]:
    keyed = "$http_idempotency_key" in _text(server).lower()
    retry_all = [lc for lc in proxied if "non_idempotent" in lc.value("proxy_next_upstream")]
    out = []
    if retry_all and not keyed:
        lc = retry_all[0]
        d = lc.get("proxy_next_upstream")
        out.append(Finding(
            "post-retry", d.file if d else lc.loc.file, d.line if d else lc.loc.line,
            "non_idempotent retries every POST on the next replica, also one the first "
            "replica had already done: a payment or a write runs twice",
            "retry a POST only when it carries an Idempotency-Key that the API deduplicates "
            "on: `if ($http_idempotency_key != \"\") { return 418; }` with "
            "`error_page 418 = @keyed;`, and non_idempotent in `location @keyed` only"))
    if not retry_all:
        on_fail = [lc for lc in proxied
                   if {"error", "timeout"} & set(lc.value("proxy_next_upstream").split())]
        if on_fail:
            lc = on_fail[0]
            d = lc.get("proxy_next_upstream") or lc.loc.children("proxy_pass")[-1]
            out.append(Finding(
                "post-retry", d.file, d.line,
                f"proxy_next_upstream {lc.value('proxy_next_upstream')} retries no POST, "
                "PATCH or LOCK once it was sent: a POST to a replica that hangs or dies "
                "mid-request gets the 502/504 (week 2: the hung replica's POSTs failed)",
                "send an Idempotency-Key with every POST, deduplicate on it in the API, and "
                "retry keyed POSTs only: `if ($http_idempotency_key != \"\") { return 418; }`, "
                "`error_page 418 = @keyed;`, `location @keyed { proxy_pass ...; "
                "proxy_next_upstream error timeout non_idempotent; }`"))
    return out


def _text(d: Directive) -> str:
    parts = [d.name, *d.args]
    for c in d.block or []:
        parts.append(_text(c))
    return " ".join(parts)


def _static_health(server: Directive, locs: list[_Loc],
                   upstreams: dict[str, Directive]) -> list[Finding]:
    out = []
    for lc in locs:
        if not any("health" in a.lower() for a in lc.loc.args):
            continue
        ret = lc.loc.children("return")
        if ret and ret[-1].args and ret[-1].args[0].startswith("2") and \
                not lc.loc.children("proxy_pass"):
            up = next(iter(upstreams), "api_backend")
            out.append(Finding(
                "static-health", ret[-1].file, ret[-1].line,
                f"location {' '.join(lc.loc.args)} answers {ret[-1].args[0]} from nginx "
                "itself: it says healthy with every replica down (week 2 stopped them all and "
                "got 200)",
                f"ask the replicas: `proxy_pass http://{up}/readyz; proxy_next_upstream_tries "
                "0; error_page 502 504 = @no_ready;` with `location @no_ready { return 503; }`"))
    return out


def _read_timeout(proxied: list[_Loc], client_timeout_s: float) -> list[Finding]:
    out = []
    for lc in proxied:
        value = lc.value("proxy_read_timeout")
        if seconds(value) < client_timeout_s:
            continue
        d = lc.get("proxy_read_timeout") or lc.loc.children("proxy_pass")[-1]
        out.append(Finding(
            "timeout-order", d.file, d.line,
            f"proxy_read_timeout {value}"
            + ("" if lc.get("proxy_read_timeout") else " (nginx's default)")
            + f" in location {' '.join(lc.loc.args)} is not below the client's timeout "
            f"({format_duration(client_timeout_s)}): with a hung replica the client gives up "
            "before nginx does, so nginx never retries and the client sees a timeout",
            "proxy_read_timeout near the app's p99 and well below the client's timeout "
            "(week 2's tuned preset: 1500ms), with proxy_next_upstream_timeout bounding the "
            "retries", {"read_timeout_s": seconds(value)}))
        break  # one per server: the inherited value repeats in every location
    return out


@dataclass
class AuditReport:
    """What `stackctl audit` prints: nginx's word, then the findings."""

    path: Path
    nginx_said: str
    found: list[Finding]

    def lines(self) -> list[str]:
        out = [self.nginx_said]
        for f in self.found:
            out += f.lines()
        kinds = sorted({f.kind for f in self.found})
        out.append(f"{self.path}: {len(self.found)} findings" +
                   (f" ({', '.join(kinds)})" if kinds else ": none of week 2's problems"))
        return out


def audit(path: str | Path, *, client_timeout_s: float = CLIENT_TIMEOUT_S,
          app_keepalive_s: float = APP_KEEPALIVE_S,
          max_fail_timeout_s: float = MAX_FAIL_TIMEOUT_S, run_nginx: bool = True) -> AuditReport:
    """`nginx -t` on the file, then every finding; ConfigError when nginx rejects it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("no such file", source=str(p))
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise StackError(f"{p}: cannot read it: {exc.strerror}") from None
    said = nginx_test(p, is_fragment(text)) if run_nginx else ""
    top = parse(p)
    found = findings(top, client_timeout_s=client_timeout_s, app_keepalive_s=app_keepalive_s,
                     max_fail_timeout_s=max_fail_timeout_s)
    return AuditReport(p, said, found)
