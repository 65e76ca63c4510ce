"""`stackctl audit`: week 2's nginx findings as a static check, on the playbook's config as the
lab renders it, on the tuned preset, on fragments with includes, and on configs nginx rejects."""
from __future__ import annotations

from pathlib import Path

import pytest

from stack.cli import main
from stack.components.nginx import render_config
from stack.errors import ConfigError
from stack.own.nginx_audit import audit, parse
from stack.topology import API_KEEP_ALIVE_S, NginxSpec

WEEK2 = {"keepalive", "post-retry", "static-health", "no-zone", "fail-timeout", "timeout-order"}


def _conf(tmp_path: Path, preset: str) -> Path:
    path = tmp_path / f"{preset}.conf"
    path.write_text(render_config(NginxSpec(preset=preset), port=18080, status_port=18081,
                                  backends=[("api1", 18001), ("api2", 18002)]))
    return path


def test_the_playbooks_config_shows_every_finding_week2_measured(tmp_path: Path):
    path = _conf(tmp_path, "playbook")
    report = audit(path)
    assert report.nginx_said.startswith("nginx -t: the syntax is ok")
    assert {f.kind for f in report.found} == WEEK2
    text = path.read_text().splitlines()
    for f in report.found:  # each finding points at the line it is about, and says the fix
        assert f.file == str(path) and f.fix
        line = text[f.line - 1]
        expected = {"keepalive": "proxy_pass", "post-retry": "proxy_next_upstream",
                    "static-health": "return 200", "no-zone": "upstream api_backend",
                    "fail-timeout": "fail_timeout=30s",
                    "timeout-order": "proxy_read_timeout 10s"}[f.kind]
        assert expected in line, (f.kind, line)
    assert sum(f.kind == "fail-timeout" for f in report.found) == 2  # one per server line


def test_the_tuned_preset_is_clean_against_the_courses_app(tmp_path: Path):
    report = audit(_conf(tmp_path, "tuned"), app_keepalive_s=API_KEEP_ALIVE_S)
    assert report.found == []
    assert report.lines()[-1].endswith("0 findings: none of week 2's problems")
    # against uvicorn's default keep-alive (5 s), nginx's 30 s idle upstream connections are
    # the wrong way round
    kinds = [f.kind for f in audit(_conf(tmp_path, "tuned")).found]
    assert kinds == ["timeout-order"]


def test_a_fragment_with_an_include_names_the_included_file(tmp_path: Path):
    (tmp_path / "upstreams").mkdir()
    (tmp_path / "upstreams" / "app.conf").write_text(
        "upstream app {\n    server 127.0.0.1:9001 max_fails=2 fail_timeout=1s;\n"
        "    server 127.0.0.1:9002 max_fails=2 fail_timeout=1s;\n    zone app 64k;\n"
        "    keepalive 8;\n    keepalive_timeout 4s;\n}\n")
    site = tmp_path / "site.conf"
    site.write_text(
        "include upstreams/*.conf;\n"
        "server {\n    listen 127.0.0.1:18090;\n    proxy_http_version 1.1;\n"
        '    proxy_set_header Connection "";\n    proxy_read_timeout 2s;\n'
        "    location / {\n        proxy_set_header Host $host;  # replaces Connection\n"
        "        proxy_pass http://app;\n    }\n}\n")
    report = audit(site, run_nginx=False)
    kinds = {(f.kind, Path(f.file).name, f.line) for f in report.found}
    assert ("keepalive", "site.conf", 9) in kinds
    assert ("post-retry", "site.conf", 9) in kinds
    assert not any(k == "fail-timeout" for k, _, _ in kinds)
    assert [d.name for d in parse(site)][:1] == ["upstream"]  # the include, expanded in place
    assert "checked inside an http block" in audit(site).nginx_said


def test_keyed_retries_are_fine_but_retrying_every_post_is_not(tmp_path: Path):
    body = ("upstream app { server 127.0.0.1:9001 max_fails=0; server 127.0.0.1:9002 "
            "max_fails=0; }\nserver {\n  listen 127.0.0.1:18091;\n  proxy_read_timeout 2s;\n"
            "  location / {\n    proxy_pass http://app;\n"
            "    proxy_next_upstream error timeout non_idempotent;\n  }\n}\n")
    path = tmp_path / "all.conf"
    path.write_text(body)
    found = audit(path, run_nginx=False).found
    assert [(f.kind, f.line) for f in found] == [("post-retry", 7)]
    assert "runs twice" in found[0].problem


def test_a_config_nginx_rejects_gets_nginxs_own_message(tmp_path: Path, capsys):
    path = tmp_path / "bad.conf"
    path.write_text("server {\n  listen 127.0.0.1:18092;\n  location / { proxy_pas http://x; }\n}\n")
    with pytest.raises(ConfigError, match=r'nginx: \[emerg\] unknown directive "proxy_pas" in '
                       + str(path) + ":3"):
        audit(path)
    assert main(["audit", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nginx -t rejected it" in err[0]


def test_a_missing_file_is_one_line(tmp_path: Path, capsys):
    assert main(["audit", str(tmp_path / "nope.conf")]) == 2
    assert capsys.readouterr().err.strip() == f"stackctl: {tmp_path / 'nope.conf'}: no such file"


def test_strict_exits_1_on_findings(tmp_path: Path, capsys):
    path = _conf(tmp_path, "playbook")
    assert main(["audit", str(path)]) == 0
    assert main(["audit", "--strict", str(path)]) == 1
    out = capsys.readouterr().out
    assert "fix: add `zone api_backend 64k;`" in out
