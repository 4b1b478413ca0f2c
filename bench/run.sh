#!/usr/bin/env bash
# Install the peers if missing, then run the benchmark: bench/run.sh [run_bench.py options]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
if ((${#missing[@]})); then
    apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }
fi
exec "$here/../.venv/bin/python" "$here/run_bench.py" "$@"
