"""The real programs a lab runs, one module each (nginx, Postgres, Redis, the API replicas,
Prometheus, Alertmanager, the exporters, the lab's own daemons), on one Component base."""
