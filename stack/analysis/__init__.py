"""Pure functions on what a run recorded: availability and latency, SLOs and burn rates,
health states, incident timelines, dashboards and plots."""
