"""The playbook on a team's own API: `stackctl probe`, `load`, `audit` and `slo render`.

- durations.py: "5", "0.5s", "30s", "1h" -> seconds, with one clear error for bad input;
- measure.py: the week-1 uptime probe and the open-loop load client against any URL
  (stack.lab.traffic), analysed like week 1 (stack.analysis.records);
- nginx_audit.py: week 2's nginx findings as a static check of a config file (`nginx -t`
  first), each naming the file, the line and the fix;
- slo_render.py: recording rules, burn-rate alerts and a Grafana dashboard at real windows and
  the team's metric names, checked with promtool.
"""
