#!/usr/bin/env bash
# Create or refresh the project's Python environment; idempotent and fast when nothing changed.
#
# Layout (why): installing torch + open_clip + dagster + mlflow takes minutes and gigabytes, so the
# *dependencies* live in a venv cached outside the clone, keyed by a hash of pyproject.toml and
# constraints.txt (RDTF_VENV_CACHE, default ~/.cache/rdtf-stickers/venvs). Every clone then gets a
# tiny real venv at ./.venv whose site-packages points at the cached one (a .pth file) and at the
# clone's own source tree, so fresh CI clones reuse the cache without re-downloading, and a clone
# never runs another clone's code. Old cache entries are pruned (the newest 2 are kept).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
"$py" - <<'PYCHK' || { echo "bootstrap: Python >= 3.11 is required (set PYTHON=...)" >&2; exit 1; }
import sys; raise SystemExit(0 if sys.version_info >= (3, 11) else 1)
PYCHK
pyver=$("$py" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
# The key covers what is installed (dependency lists, Python floor, constraints), not the whole
# pyproject.toml, so editing tool settings there does not rebuild the environment.
key=$("$py" - "$root/pyproject.toml" "$root/constraints.txt" <<'PYKEY'
import hashlib, json, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
spec = {k: project.get(k) for k in ("requires-python", "dependencies", "optional-dependencies")}
blob = json.dumps(spec, sort_keys=True).encode() + open(sys.argv[2], "rb").read()
print(hashlib.sha256(blob).hexdigest()[:16])
PYKEY
)
cache=${RDTF_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rdtf-stickers/venvs}
deps="$cache/deps-$pyver-$key"
mkdir -p "$cache"

build_deps() {
  echo "bootstrap: building dependency venv $deps (first run: several minutes, ~6 GB)" >&2
  rm -rf "$deps"
  "$py" -m venv "$deps"
  local log="$cache/install-$key.log"
  local reqs
  reqs=$("$py" - "$root/pyproject.toml" <<'PYREQ'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["dev"]))
PYREQ
)
  {
    # torch first (the largest download), pinned by constraints.txt.
    "$deps/bin/python" -m pip install --disable-pip-version-check -c "$root/constraints.txt" torch &&
    echo "$reqs" | tr '\n' '\0' | xargs -0 "$deps/bin/python" -m pip install --disable-pip-version-check \
      -c "$root/constraints.txt"
  } >"$log" 2>&1 || { grep -v "is ignored: it is neither" "$log" | tail -40 >&2; echo "bootstrap: install failed, full log: $log" >&2; exit 1; }
  touch "$deps/.complete"
}

(
  flock 9
  [ -f "$deps/.complete" ] || build_deps
  touch "$deps/.complete"   # mtime = last use, for pruning
  # prune: keep the two most recently used dependency venvs
  ls -1dt "$cache"/deps-* 2>/dev/null | tail -n +3 | while read -r old; do
    [ "$old" = "$deps" ] || { echo "bootstrap: pruning old venv $old" >&2; rm -rf "$old" "$cache/install-${old##*-}.log"; }
  done
) 9>"$cache/.lock"

# The clone's own light venv: re-made only when it points elsewhere.
venv="$root/.venv"
site_rel="lib/python${pyver#py3}"; site_rel="lib/python3.${pyver#py3}/site-packages"
if [ "$(cat "$venv/.rdtf-deps" 2>/dev/null)" != "$deps" ] || [ ! -x "$venv/bin/python" ] || ! grep -q __main__ "$venv/bin/pytest" 2>/dev/null \
   || grep -q "from dagster.cli " "$venv/bin/dagster" 2>/dev/null || [ ! -x "$venv/bin/uvicorn" ]; then
  rm -rf "$venv"
  "$py" -m venv --without-pip "$venv"
  dep_site="$deps/$site_rel"
  echo "import site; site.addsitedir('$dep_site')" >"$venv/$site_rel/rdtf_deps.pth"
  echo "$root" >"$venv/$site_rel/rdtf_src.pth"
  # console entry points (the dependency venv's own scripts would run its interpreter, not ours)
  # rdtf is ours; the others reuse the entry point (module, function) of the dependency venv's own script.
  # uvicorn: `mlflow models serve` execs it from PATH (the MLflow scoring server)
  for name in rdtf dagster dagster-webserver dagster-daemon mlflow pytest ruff uvicorn; do
    if [ "$name" = ruff ]; then ln -sf "$deps/bin/ruff" "$venv/bin/ruff"; continue; fi
    if [ "$name" = rdtf ]; then set -- pipelines.cli main
    else set -- $(sed -n 's/^from \([A-Za-z0-9_.]*\) import \([A-Za-z0-9_]*\)$/\1 \2/p' "$deps/bin/$name" | head -1); fi
    [ $# -eq 2 ] || { echo "bootstrap: cannot find the entry point of $deps/bin/$name" >&2; exit 1; }
    # the __main__ guard matters: spawn-context workers re-run the main script (without it: pytest in pytest)
    printf '#!%s\nimport sys\nfrom %s import %s\nif __name__ == "__main__":\n    sys.exit(%s())\n' \
      "$venv/bin/python" "$1" "$2" "$2" >"$venv/bin/$name"
    chmod +x "$venv/bin/$name"
  done
  echo "$deps" >"$venv/.rdtf-deps"
fi
