# Shared by the bench scripts that start `herd worker` processes (bench/tp.sh,
# bench/plan_vs_measured.sh): source it after `set -euo pipefail`.
#   worker_pids+=($!)   after starting a worker in the background; stop_workers ends them all
#                       (also on exit, by the trap set here).
#   json_get KEY        reads one JSON object per line on stdin (`herd bench --json`, `herd plan
#                       --json`), prints KEY of the last line that has it (None when none does).

worker_pids=()
stop_workers() {
  for pid in "${worker_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${worker_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  worker_pids=()
}
trap stop_workers EXIT

json_get() {
  python3 -c '
import json, sys
key = sys.argv[1]; val = None
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"): continue
    try: obj = json.loads(line)
    except ValueError: continue
    if key in obj: val = obj[key]
print(val)' "$1"
}
