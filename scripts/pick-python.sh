#!/usr/bin/env bash
# Prints the Python the project's virtual environment is made with.
# As root, the lab runs Postgres and its Patroni agents as the unprivileged user 'stacklab':
# that user must be able to run the environment's interpreter, which a Python installed under
# /root (pyenv, for one) does not allow. Then the system's /usr/bin/python3 is used.
set -euo pipefail
user="${STACK_PG_USER:-stacklab}"
candidates=(python3 /usr/bin/python3)
for py in "${candidates[@]}"; do
  path="$(command -v "$py" 2>/dev/null)" || continue
  path="$(readlink -f "$path")"
  "$path" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || continue
  if [ "$(id -u)" -eq 0 ] && id "$user" >/dev/null 2>&1; then
    runuser -u "$user" -- "$path" -c 'import venv' >/dev/null 2>&1 || continue
  fi
  echo "$path"; exit 0
done
echo "setup: no Python 3.11 or newer that the lab's Postgres user ($user) can run;" \
     "install python3 (3.11+) with apt-get" >&2
exit 1
