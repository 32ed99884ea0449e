#!/usr/bin/env bash
# One entry point for the README commands: `bash scripts/dev.sh demo` and `bash scripts/dev.sh test`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
t0=$(date +%s%N)
bash scripts/bootstrap.sh
export RDTF_BOOTSTRAP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))  # the demo prints its time with and without it
export RDTF_HOME=${RDTF_HOME:-$root/var}
export DAGSTER_HOME=${DAGSTER_HOME:-$RDTF_HOME/dagster_home}
.venv/bin/python -m pipelines.dagster_home "$DAGSTER_HOME" >/dev/null  # dagster.yaml with storage in $DAGSTER_HOME
export PYTHONUNBUFFERED=1
cmd=${1:-help}; shift || true
case "$cmd" in
  demo)  exec .venv/bin/python -m pipelines.demo "$@" ;;
  test)  bash scripts/system_deps.sh; exec .venv/bin/python -m pytest "$@" ;;
  lint)  exec .venv/bin/ruff check . ;;
  # Dagster (webserver + daemon) on :3000 and the MLflow UI on :5000 next to it (the asset pages link MLflow runs and
  # show previews and charts inline from it, see training/links.py); both stop together (Ctrl-C)
  ui)    export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RDTF_HOME/mlflow.db}
         mlport=${MLFLOW_PORT:-5000}; export RDTF_MLFLOW_UI=${RDTF_MLFLOW_UI-http://127.0.0.1:$mlport}
         mlpid=""
         case "$MLFLOW_TRACKING_URI" in
           http://*|https://*) ;;  # a tracking server already has its own UI
           *) mkdir -p "$RDTF_HOME/logs"
              setsid .venv/bin/mlflow ui --backend-store-uri "$MLFLOW_TRACKING_URI" -h 127.0.0.1 -p "$mlport" \
                >"$RDTF_HOME/logs/mlflow-ui.log" 2>&1 &
              mlpid=$!
              echo "MLflow UI on http://127.0.0.1:$mlport (log: $RDTF_HOME/logs/mlflow-ui.log)" >&2 ;;
         esac
         trap '[ -n "$mlpid" ] && kill -- -"$mlpid" 2>/dev/null; wait' EXIT INT TERM
         .venv/bin/dagster dev -h 127.0.0.1 -p "${PORT:-3000}" -w workspace.yaml ;;
  bench) exec .venv/bin/python -m "benchmarks.$1" "${@:2}" ;;
  rdtf)  exec .venv/bin/rdtf "$@" ;;
  # the MLflow scoring server for a registered model, e.g. `serve -m models:/rdtf-dfgn@champion -p 5001`
  serve) export PATH="$root/.venv/bin:$PATH" MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$RDTF_HOME/mlflow.db}
         exec .venv/bin/mlflow models serve --env-manager local -h 127.0.0.1 "$@" ;;
  *) echo "usage: bash scripts/dev.sh {demo|test|lint|ui|bench NAME|rdtf ARGS...|serve -m MODEL_URI [-p PORT]}" >&2; exit 2 ;;
esac
