"""Safe changes: the model gate (smoke tests before any replica sees a model) and blue/green
deploys, rollbacks and rolling restarts."""
