#!/usr/bin/env bash
# Installs the real programs the lab runs, where they are missing. Idempotent: a machine that
# has them all is left untouched. Debian/Ubuntu: apt-get (as root, or with sudo). macOS: prints
# the Homebrew line.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
pg_bindir() {
  if have pg_config && [ -x "$(pg_config --bindir)/initdb" ]; then return 0; fi
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

missing=()
have nginx || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
have redis-server || missing+=(redis-server)
pg_bindir || missing+=(postgresql)
have prometheus || missing+=(prometheus)
have prometheus-alertmanager || missing+=(prometheus-alertmanager)
have prometheus-nginx-exporter || missing+=(prometheus-nginx-exporter)
have prometheus-postgres-exporter || missing+=(prometheus-postgres-exporter)
have prometheus-redis-exporter || missing+=(prometheus-redis-exporter)
have prometheus-blackbox-exporter || missing+=(prometheus-blackbox-exporter)  # the uptime probe
have etcd || missing+=(etcd-server)  # Patroni's leader lock lives in etcd
have hey || missing+=(hey)  # make bench's closed-loop capacity run
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# As root the venv may be made with the system's Python (scripts/pick-python.sh says why).
if [ "$(id -u)" -eq 0 ] && [ "$(uname -s)" = Linux ]; then
  { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; } \
    || missing+=(python3-venv)
fi

case "$(uname -s)" in
  Darwin)
    if [ ${#missing[@]} -gt 0 ]; then
      echo "setup: install the lab's programs with Homebrew:"
      echo "  brew install nginx redis postgresql@15 prometheus alertmanager blackbox_exporter hey"
    fi
    exit 0 ;;
esac

if [ ${#missing[@]} -gt 0 ]; then
  if ! have apt-get; then
    echo "setup: missing ${missing[*]} and apt-get is not available: install them with your" \
         "package manager, then run make again" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if have sudo; then SUDO="sudo"; else
      echo "setup: missing ${missing[*]}: run as root or install sudo" >&2; exit 1
    fi
  fi
  echo "setup: installing ${missing[*]} with apt-get"
  # The lab makes its own Postgres clusters; the package need not create a system one.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    $SUDO mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Postgres refuses to run as root: a root lab runs it as this unprivileged user.
if [ "$(id -u)" -eq 0 ] && ! id stacklab >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin stacklab
  echo "setup: created the unprivileged user 'stacklab' for Postgres"
fi
echo "setup: system programs present"
