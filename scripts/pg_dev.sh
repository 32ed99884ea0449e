#!/usr/bin/env bash
# A local, throwaway PostgreSQL for trying the production storage configuration (deploy/postgres/README.md):
# the same helper the tests use (tests/pg_server.py) - a fresh cluster in a temp dir on a free port bound to
# 127.0.0.1, databases `dagster` and `mlflow` owned by a password role. It prints the DAGSTER_PG_* and
# MLFLOW_TRACKING_URI exports (also written to --env-file FILE), runs until Ctrl-C, then stops the server and
# deletes its data. Needs the Debian `postgresql` package (bash scripts/system_deps.sh).
#
#   bash scripts/pg_dev.sh --env-file var/pg.env      # terminal 1
#   source var/pg.env && ...                           # terminal 2
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[ -x .venv/bin/python ] || bash scripts/bootstrap.sh
exec .venv/bin/python -m tests.pg_server "$@"
