#!/usr/bin/env bash
# Load run of `herd serve` on 127.0.0.1 (bench/serve_load.py): 64 concurrent connections for 60 s
# by default, a mix of completions, chat streams, streams dropped mid-way and malformed requests;
# counts ok / deliberate 503-429 / failed and compares the server's RSS in the first and last 10 s
# (target: within 10%). Exit status 1 when a target is missed.
#
#   bench/serve_load.sh [HERD_BIN] [-m MODEL] [-C 64] [-d 60] [--parallel 4] [--queue 32] [-t 1] [--backoff 1]
#
# MODEL defaults to models/SmolLM2-135M-Instruct.Q4_1.gguf.
set -euo pipefail
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ "${1:-}" == -h || "${1:-}" == --help ]] && usage 0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERD=$ROOT/build/bin/herd
if [[ $# -ge 1 && $1 != -* ]]; then HERD=$(realpath "$1"); shift; fi
M=$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -m) M=$2; shift 2 ;;
    -C|-d|--parallel|--queue|-t|-c|--backoff) ARGS+=("$1" "$2"); shift 2 ;;
    *) echo "serve_load.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ -x "$HERD" ]] || { echo "serve_load.sh: $HERD is not an executable herd binary" >&2; exit 2; }
[[ -f "$M" ]] || { echo "serve_load.sh: $M missing (scripts/fetch-model.sh)" >&2; exit 2; }
python3 -c 'import requests' 2>/dev/null || { echo "serve_load.sh: needs python3 with requests" >&2; exit 2; }
exec python3 "$ROOT/bench/serve_load.py" --herd "$HERD" --model "$M" "${ARGS[@]}"
