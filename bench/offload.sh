#!/usr/bin/env bash
# [offload] item 1: a worker whose shard is 4x its memory streams its weights from disk.
#
# For a stories110M-shaped model (Q8_0) and a llama3-70b-shaped one cut to 4 layers (Q4_K_S), one
# worker holding the whole model runs
#   1. unconstrained (its free memory as budget: nothing streams), and
#   2. inside a fresh memory cgroup v1 whose limit is a quarter of the shard (--mem-budget auto finds
#      the limit), streaming its repacked weights from the packed file of its weight cache;
# and reports decode tok/s of both (`herd bench -p 0`, median), the worker's peak RSS (VmHWM) and the
# cgroup's peak usage (page cache included), whether the prompt's logits are bit-identical (cmp of
# `herd logits -p` dumps), and the disk-read bound: bytes streamed per token (the packed file's
# matrices of the layers the worker streams: its note says which leading layers stay resident;
# every streamed piece is dropped after use, so every token reads them all again) / the sequential
# read speed of that file (read_speed: dd with O_DIRECT, no page cache; the best of one and of four
# readers).
# Beside them, the planner's predictions (`herd plan --json`) for both runs, as a user would get them:
# a cluster file with one worker on this host whose figures come from `herd probe -t THREADS --disk
# PACKED` (the packed file the worker streams) and overhead= the idle worker's RSS (the planner's default
# for a CPU, 128 MiB, is more than a quarter of stories110M), with free=LIMIT for the streamed run.
# Needs root and a writable /sys/fs/cgroup/memory (else it says so and stops).
#
#   bench/offload.sh                     # both models
#   MODELS=s110 bench/offload.sh         # only the small one
# The streamed row is the median of ROUNDS rounds, each a decode run then the disk read of the
# packed file (`herd probe --quick --disk`) and the planner's prediction with that disk figure (the
# kernel rates from one full probe): this virtual disk's speed over a small file swings between
# passes minutes apart, so each prediction uses the disk as it was beside its run.
# Env: HERD (binary), OFFLOAD_DIR (models and caches; default /tmp/herd-offload-bench), N (decode
# tokens per streamed repetition, 8, no warm-up), N_PLAIN (per repetition in memory, 64, after a
# warm-up), R (repetitions), ROUNDS (streamed rounds, 3), THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
HERD=${HERD:-build/bin/herd}
DIR=${OFFLOAD_DIR:-/tmp/herd-offload-bench}
MODELS=${MODELS:-"s110 l70"}
THREADS=${THREADS:-2}
PROMPT="Once upon a time there was a little robot who"
mkdir -p "$DIR"
export HERD_LOG=warn

cg_parent=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
CGROOT=/sys/fs/cgroup/memory${cg_parent%/}
if [[ ! -w $CGROOT ]]; then
  echo "offload.sh: $CGROOT is not writable (root and cgroup v1 needed); nothing measured" >&2
  exit 1
fi
CG=$CGROOT/herd-offload-bench-$$
cleanup() {
  stop_workers
  [[ -d $CG ]] && rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT

model_file() {  # name -> path (synthesized once)
  case $1 in
    s110) f=$DIR/stories110m-Q8_0.gguf; [[ -f $f ]] || "$HERD" synth --shape stories110m --type Q8_0 -o "$f" -q ;;
    l70) f=$DIR/llama3-70b-4layers-Q4_K_S.gguf
      [[ -f $f ]] || "$HERD" synth --shape llama3-70b --layers 4 --type Q4_K_S -o "$f" -q ;;
  esac
  echo "$f"
}

start_worker() {  # cache-dir log -> sets $wpid $waddr
  "$HERD" worker --listen tcp://127.0.0.1:* -t "$THREADS" --models-dir / --cache-dir "$1" --insecure 2>"$2" &
  wpid=$!
  worker_pids+=("$wpid")
  for _ in $(seq 1200); do grep -q "listening on" "$2" && break; sleep 0.1; done
  waddr=$(sed -n 's/.*listening on tcp:\/\/\(.*\)$/\1/p' "$2" | head -1)
  [[ -n $waddr ]] || { echo "offload.sh: the worker did not start:" >&2; cat "$2" >&2; exit 1; }
}

logits() {  # model out.log1: the prompt's logits (a small f16 KV cache: the budget counts all of it)
  "$HERD" logits -m "$1" -p "$PROMPT" -c 64 --kv-type f16 --workers "$waddr" --insecure --out "$2" 2>"$2.err" ||
    { echo "offload.sh: herd logits failed:" >&2; cat "$2.err" "$DIR"/*.log >&2; exit 1; }
}

tg_rate() {  # model worker [n] -> median decode tok/s; sets $disk_per_token: bytes the worker read
  # from storage (/proc/PID/io read_bytes: not the page cache) per decoded token. With n: n tokens a
  # repetition after a warm-up (the run in memory: a few ms per token, where 8 tokens and no
  # warm-up measured the repetitions' fixed costs too, ~25 ms each: 150 tok/s where 64 read 300);
  # without: N tokens and no warm-up (streamed: every token is a disk pass).
  local before after rate n=${3:-${N:-8}} warm=()
  [[ -n ${3:-} ]] || warm=(--no-warmup)
  before=$(awk '/^read_bytes/ { print $2 }' "/proc/$wpid/io")
  rate=$("$HERD" bench -m "$1" --workers "$2" -p 0 -n "$n" -r "${R:-3}" "${warm[@]}" --insecure --json 2>/dev/null |
    json_get median_ts)
  after=$(awk '/^read_bytes/ { print $2 }' "/proc/$wpid/io")
  disk_per_token=$(( (after - before) / (n * ${R:-3}) ))
  echo "$rate"
}

predict() {  # model probe.json overhead-bytes [free bytes] -> the planner's decode tok/s for one worker with
  # those figures (overhead: the runtime memory beside weights and KV, measured as an idle worker's RSS)
  echo "worker host=127.0.0.1 port=7001 threads=$THREADS probe=$2 overhead=$3${4:+ free=$4}" > "$DIR/cluster.txt"
  "$HERD" plan -m "$1" --cluster "$DIR/cluster.txt" --ctx 64 --kv-type f16 --json 2>"$DIR/plan.err" |
    python3 -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["plans"][0]["decode_tok_s"])' ||
    { echo "offload.sh: herd plan failed:" >&2; cat "$DIR/plan.err" >&2; exit 1; }
}

streamed_bytes() {  # packed-file resident-layers -> the bytes a token re-reads: its header's matrices
  # of the streamed layers (unit >= the resident count; the output matrix is unit n_layers)
  python3 - "$1" "$2" <<'PY'
import sys
path, resident = sys.argv[1], int(sys.argv[2])
total = 0
for line in open(path, "rb").read(1 << 20).decode("latin-1").split("\n"):
    f = line.split()
    if f[:1] == ["crc"]: break
    if f[:1] == ["matrix"] and int(f[1]) >= resident: total += int(f[7])
print(total)
PY
}

err_pct() { python3 -c "print('%+.0f%%' % (100 * ($1 - $2) / $2))"; }

hwm_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

read_speed() {  # file -> GB/s the disk reads it at: the best of 3 runs each of one dd (O_DIRECT, 64 MiB
  # requests) and of 4 dd's at once over its quarters (the queue depth a reader with readahead gets)
  local f=$1 size q t0 t1 best=0 r
  size=$(stat -c %s "$f")
  q=$(( (size / 4 + (64 << 20) - 1) / (64 << 20) ))
  for _ in 1 2 3; do
    t0=$(date +%s.%N)
    dd if="$f" of=/dev/null bs=64M iflag=direct status=none
    t1=$(date +%s.%N)
    r=$(python3 -c "print($size / ($t1 - $t0) / 1e9)")
    best=$(python3 -c "print(max($best, $r))")
    t0=$(date +%s.%N)
    for i in 0 1 2 3; do dd if="$f" of=/dev/null bs=64M iflag=direct skip=$((i * q)) count=$q status=none & done
    wait
    t1=$(date +%s.%N)
    r=$(python3 -c "print($size / ($t1 - $t0) / 1e9)")
    best=$(python3 -c "print(max($best, $r))")
  done
  printf "%.2f" "$best"
}

printf "| model | shard MiB | limit MiB | tok/s in memory (planner) | tok/s streamed (planner) | layers resident | streamed MiB/token (read from disk) | read GB/s | bound tok/s | streamed/bound | peak RSS MiB (in mem / streamed) | cgroup peak MiB | logits |\n"
printf "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
for m in $MODELS; do
  f=$(model_file "$m")
  shard=$(stat -c %s "$f")  # the whole model is the one worker's shard (header bytes included: < 0.1%)
  limit=$((shard / 4))
  # 1. unconstrained
  start_worker "$DIR/cache-plain-$m" "$DIR/$m-plain.log"
  idle_rss=$(awk '/VmRSS/ { print $2 * 1024 }' "/proc/$wpid/status")  # before it holds any model
  logits "$f" "$DIR/$m-plain.log1"
  tg_rate "$f" "$waddr" "${N_PLAIN:-64}" > "$DIR/rate"; tg_plain=$(cat "$DIR/rate")
  hwm_plain=$(hwm_mib "$wpid")
  stop_workers
  # 2. in a memory cgroup at a quarter of the shard
  mkdir "$CG"
  echo 1 > "$CG/memory.move_charge_at_immigrate" 2>/dev/null || true
  echo "$limit" > "$CG/memory.limit_in_bytes"
  echo "$limit" > "$CG/memory.memsw.limit_in_bytes" 2>/dev/null || true
  rm -rf "$DIR/cache-stream-$m"
  start_worker "$DIR/cache-stream-$m" "$DIR/$m-stream.log"
  echo "$wpid" > "$CG/cgroup.procs"
  logits "$f" "$DIR/$m-stream.log1"
  packed=$(find "$DIR/cache-stream-$m" -name 'packed-*.bin' | head -1)
  # The full probe once (kernel rates, the cache curve; its disk figure is replaced below), then
  # ROUNDS rounds of the streamed decode each followed by the disk read of its packed file
  # (`herd probe --quick --disk`, its disk_read_Bps only) and the planner's prediction with it:
  # this virtual disk's speed over a small file swings by up to 2x between passes minutes apart,
  # so each prediction takes the disk figure measured beside its run; medians over the rounds.
  "$HERD" probe -t "$THREADS" --disk "$packed" --out "$DIR/probe-$m.json" >"$DIR/probe-$m.log" 2>&1 ||
    { echo "offload.sh: herd probe failed:" >&2; cat "$DIR/probe-$m.log" >&2; exit 1; }
  rates=(); preds=(); disks=(); reads=()
  for _ in $(seq "${ROUNDS:-3}"); do
    tg_rate "$f" "$waddr" > "$DIR/rate"; rates+=("$(cat "$DIR/rate")"); reads+=("$disk_per_token")
    "$HERD" probe -t "$THREADS" --quick --disk "$packed" --out "$DIR/probe-$m-disk.json" >"$DIR/probe-$m-disk.log" 2>&1 ||
      { echo "offload.sh: herd probe --disk failed:" >&2; cat "$DIR/probe-$m-disk.log" >&2; exit 1; }
    python3 -c '
import json, sys
p = json.load(open(sys.argv[1])); p["disk_read_Bps"] = json.load(open(sys.argv[2]))["disk_read_Bps"]
json.dump(p, open(sys.argv[3], "w"))' "$DIR/probe-$m.json" "$DIR/probe-$m-disk.json" "$DIR/probe-$m-round.json"
    disks+=("$(python3 -c "import json; print(json.load(open('$DIR/probe-$m-round.json'))['disk_read_Bps'] / 1e9)")")
    preds+=("$(predict "$f" "$DIR/probe-$m-round.json" "$idle_rss" "$limit")")
  done
  median() { printf '%s\n' "$@" | python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.stdin))'; }
  tg_stream=$(median "${rates[@]}"); pred_stream=$(median "${preds[@]}"); disk_per_token=$(median "${reads[@]}")
  echo "  $m streamed, per round: tok/s ${rates[*]}; herd probe --disk GB/s ${disks[*]}; planner tok/s ${preds[*]}" >&2
  hwm_stream=$(hwm_mib "$wpid")
  cg_peak=$(awk '{ printf "%.1f", $1 / 1048576 }' "$CG/memory.max_usage_in_bytes")
  oom=$(awk '/oom_kill / { print $2 }' "$CG/memory.oom_control")
  stop_workers
  rmdir "$CG"
  grep -q "streaming the weights" "$DIR/$m-stream.log" || { echo "offload.sh: $m did not stream:" >&2; cat "$DIR/$m-stream.log" >&2; exit 1; }
  # The decode runs' assignment is the log's last (herd logits assigned the stage before it, with
  # another context: its resident prefix may differ). "streaming the weights of layers 0-..." with
  # no "keeping" part: nothing resident.
  resident=$(grep "streaming the weights" "$DIR/$m-stream.log" | tail -1 | sed -n 's/.*keeping layers 0-\([0-9]*\) resident.*/\1/p')
  resident=$(( ${resident:--1} + 1 ))
  per_token=$(streamed_bytes "$packed" "$resident")
  gbs=$(read_speed "$packed")
  bound=$(python3 -c "print('%.2f' % ($gbs * 1e9 / $per_token))")
  ratio=$(python3 -c "print('%.0f%%' % (100 * $tg_stream / $bound))")
  pred_plain=$(predict "$f" "$DIR/probe-$m.json" "$idle_rss")
  same=$(cmp -s "$DIR/$m-plain.log1" "$DIR/$m-stream.log1" && echo "bit-identical" || echo "DIFFER")
  printf "| %s | %.0f | %.0f | %.2f (%s, %s) | %.2f (%s, %s) | %s | %.0f (%.0f) | %s | %s | %s | %s / %s | %s (oom kills %s) | %s |\n" "$m" \
    "$(python3 -c "print($shard / 1048576)")" "$(python3 -c "print($limit / 1048576)")" "$tg_plain" "$pred_plain" "$(err_pct "$pred_plain" "$tg_plain")" \
    "$tg_stream" "$pred_stream" "$(err_pct "$pred_stream" "$tg_stream")" "$resident of $("$HERD" info "$f" 2>/dev/null | sed -n 's/^shape: *\([0-9]*\) layers.*/\1/p' | head -1)" \
    "$(python3 -c "print($per_token / 1048576)")" "$(python3 -c "print($disk_per_token / 1048576)")" "$gbs" "$bound" "$ratio" "$hwm_plain" "$hwm_stream" "$cg_peak" "$oom" "$same"
  grep "streaming the weights" "$DIR/$m-stream.log" | sed 's/^/  /' >&2
done
