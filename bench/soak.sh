#!/usr/bin/env bash
# Soak test of recovery ([trust] item 6): N random faults (default 100) against a local cluster of
# 3 `herd worker` processes on 127.0.0.1, each during a greedy generation of `herd run --workers`
# (default --on-worker-loss replan, default --step-timeout):
#   kill9   kill -9 of a random worker                     -> the text, re-planned over the others
#   stop    SIGSTOP of a random worker (SIGCONT after)      -> the text (heartbeats notice it in ~1.2 s)
#   freeze  a worker whose main thread stops at a random forward pass while its heartbeats go on
#           (worker --debug-freeze-after K)                 -> the text (the step timeout names it)
#   coord   kill -9 of the coordinator                      -> the workers are reusable: a plain run
#                                                              right after must give the text
# Per fault: no hang (every generation runs under `timeout -s KILL`), no orphan (after it, the only
# processes naming this cluster's ports are its 3 workers), and the generation either gives the
# reference text or exits with a named error ("worker I of N (ADDRESS...") within 5 s of the fault.
# A killed or frozen worker is restarted at its address before the next fault; a stopped one resumed.
# Prints a summary table; exits 1 when any check failed.
#
# ON_LOSS=fail makes every worker fault a named error instead (the bound of 5 s is then what is checked).
#
#   bench/soak.sh [N]      env: HERD (binary), MODEL (GGUF), SEED, PORT_BASE, GEN_TOKENS, DELAY_MS, ON_LOSS
set -u
N=${1:-100}
HERD=${HERD:-build/bin/herd}
MODEL=${MODEL:-/work/shared/models/stories260K.gguf}
SEED=${SEED:-1}
PORT_BASE=${PORT_BASE:-19710}
GEN_TOKENS=${GEN_TOKENS:-40}
DELAY_MS=${DELAY_MS:-15}     # worker --debug-delay-ms: a generation long enough for a fault to land in it
GEN_TIMEOUT=${GEN_TIMEOUT:-60}
ON_LOSS=${ON_LOSS:-replan}   # --on-worker-loss of the faulted generations
ERROR_BOUND=5                # seconds from the fault to a named error
RANDOM=$SEED

[ -x "$HERD" ] || { echo "soak: no herd binary at $HERD (build it, or set HERD)" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "soak: no model at $MODEL (set MODEL)" >&2; exit 2; }
DIR=$(mktemp -d /tmp/herd-soak-XXXXXX)
export HERD_KEY=$DIR/cluster.key
PIDS=()
now() { date +%s.%N; }
cleanup() {
  for p in "${PIDS[@]}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT

addr() { echo "127.0.0.1:$((PORT_BASE + $1))"; }
WORKERS="$(addr 0),$(addr 1),$(addr 2)"

# start_worker J [ARGS...]: (re)starts worker J at its address; waits until it listens.
start_worker() {
  local j=$1; shift
  [ -n "${PIDS[$j]:-}" ] && kill -9 "${PIDS[$j]}" 2>/dev/null && wait "${PIDS[$j]}" 2>/dev/null
  rm -f "$DIR/w$j.log"  # else the old worker's "listening on" may be read before the new one truncates it
  "$HERD" worker --listen "tcp://$(addr "$j")" -t 1 --models-dir / --debug-delay-ms "$DELAY_MS" "$@" \
    >"$DIR/w$j.log" 2>&1 &
  PIDS[$j]=$!
  for _ in $(seq 200); do
    grep -q "listening on" "$DIR/w$j.log" 2>/dev/null && return 0
    kill -0 "${PIDS[$j]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "soak: worker $j did not start: $(cat "$DIR/w$j.log")" >&2
  return 1
}

# gen OUT [ARGS...]: one generation in the background; sets GEN_PID (the `timeout` wrapper).
gen() {
  local out=$1; shift
  timeout -s KILL "$GEN_TIMEOUT" "$HERD" run -m "$MODEL" --workers "$WORKERS" --plan-strategy even \
    -p "Once upon a time" -n "$GEN_TOKENS" --temp 0 -c 256 "$@" >"$out.out" 2>"$out.err" &
  GEN_PID=$!
}

# The processes naming this cluster's ports, less its workers and their own children (a starting
# worker measures its profile in a forked child): orphans.
orphans() {
  local n=0 p
  for p in $(pgrep -f "127.0.0.1:$((PORT_BASE))" ; pgrep -f "127.0.0.1:$((PORT_BASE + 1))"; pgrep -f "127.0.0.1:$((PORT_BASE + 2))"); do
    [[ " ${PIDS[*]} " == *" $p "* ]] && continue
    [[ " ${PIDS[*]} " == *" $(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ') "* ]] && continue
    [ "$p" = "$$" ] && continue
    kill -0 "$p" 2>/dev/null && n=$((n + 1)) && echo "soak: orphan: $(tr '\0' ' ' </proc/$p/cmdline 2>/dev/null)" >&2
  done
  echo $n
}

for j in 0 1 2; do start_worker $j || exit 2; done
t0=$(now)
gen "$DIR/ref"
wait $GEN_PID || { echo "soak: the reference run failed: $(cat "$DIR/ref.err")" >&2; exit 2; }
REF_S=$(echo "$(now) - $t0" | bc)
REF=$(cat "$DIR/ref.out")
echo "soak: $N faults, seed $SEED, --on-worker-loss $ON_LOSS; reference run ${REF_S} s, $GEN_TOKENS tokens: $(echo "$REF" | head -c 60)..." >&2

declare -A FAULTS OK NAMED WRONG HANGS MISSED
KINDS=(kill9 stop freeze coord)
for k in "${KINDS[@]}"; do FAULTS[$k]=0; OK[$k]=0; NAMED[$k]=0; WRONG[$k]=0; HANGS[$k]=0; MISSED[$k]=0; done
ORPHANS=0; MAX_ERR=0; MAX_RECOVER=0; FAILS=0
ref_ms=$(echo "$REF_S * 1000 / 1" | bc)

for i in $(seq "$N"); do
  kind=${KINDS[$((RANDOM % 4))]}
  j=$((RANDOM % 3))
  delay_ms=$((ref_ms / 10 + RANDOM % (ref_ms * 6 / 10 + 1)))  # 10%..70% into a generation
  FAULTS[$kind]=$((FAULTS[$kind] + 1))
  if [ "$kind" = freeze ]; then start_worker $j --debug-freeze-after $((1 + RANDOM % GEN_TOKENS)) || exit 2; delay_ms=0; fi
  out="$DIR/g$i"
  gen "$out" --on-worker-loss "$ON_LOSS"
  sleep "$(echo "scale=3; $delay_ms / 1000" | bc)"
  if [ "$kind" = freeze ]; then  # the fault is the moment the worker freezes (it says so in its log)
    until grep -q "frozen" "$DIR/w$j.log" 2>/dev/null || ! kill -0 $GEN_PID 2>/dev/null; do sleep 0.02; done
  fi
  tf=$(now)
  alive=1; kill -0 $GEN_PID 2>/dev/null || alive=0
  case $kind in
    kill9) kill -9 "${PIDS[$j]}" ;;
    stop) kill -STOP "${PIDS[$j]}" ;;
    coord) c=$(ps -o pid= --ppid $GEN_PID | tr -d ' '); [ -n "$c" ] && kill -9 "$c" ;;
    freeze) ;;  # it freezes by itself
  esac
  wait $GEN_PID; rc=$?
  te=$(now)
  took=$(echo "$te - $tf" | bc)
  verdict=""
  if [ $rc -eq 137 ] && [ "$kind" != coord ]; then
    HANGS[$kind]=$((HANGS[$kind] + 1)); verdict="HANG"
  elif [ "$kind" = coord ]; then
    # The workers must serve the next coordinator at once, with the right text.
    gen "$out.after"; wait $GEN_PID; rc2=$?
    if [ $rc2 -eq 0 ] && [ "$(cat "$out.after.out")" = "$REF" ]; then OK[$kind]=$((OK[$kind] + 1)); verdict="ok (workers reused)"
    elif [ $rc2 -eq 137 ]; then HANGS[$kind]=$((HANGS[$kind] + 1)); verdict="HANG after"
    else WRONG[$kind]=$((WRONG[$kind] + 1)); verdict="WRONG after: $(tail -1 "$out.after.err")"; fi
  elif [ $rc -eq 0 ] && [ "$(cat "$out.out")" = "$REF" ]; then
    if [ $alive -eq 0 ]; then MISSED[$kind]=$((MISSED[$kind] + 1)); verdict="ok (ended before the fault)"
    else OK[$kind]=$((OK[$kind] + 1)); verdict="ok"
      grep -q "re-planned\|reconnected" "$out.err" && MAX_RECOVER=$(echo "if ($took > $MAX_RECOVER) $took else $MAX_RECOVER" | bc)
    fi
  elif [ $rc -ne 0 ] && grep -Eq "worker [0-9]+ of [0-9]+ \(" "$out.err"; then
    NAMED[$kind]=$((NAMED[$kind] + 1)); verdict="named error in ${took} s: $(tail -1 "$out.err" | head -c 160)"
    MAX_ERR=$(echo "if ($took > $MAX_ERR) $took else $MAX_ERR" | bc)
    if [ "$(echo "$took > $ERROR_BOUND" | bc)" = 1 ]; then verdict="SLOW $verdict"; FAILS=$((FAILS + 1)); fi
  else
    WRONG[$kind]=$((WRONG[$kind] + 1)); verdict="WRONG (rc $rc): $(tail -1 "$out.err" | head -c 160)"
  fi
  case $verdict in HANG*|WRONG*) FAILS=$((FAILS + 1)) ;; esac
  # Put the cluster back: a stopped worker resumes; a killed or frozen one restarts at its address.
  case $kind in
    stop) kill -CONT "${PIDS[$j]}" ;;
    kill9|freeze) start_worker $j || exit 2 ;;
  esac
  o=$(orphans); ORPHANS=$((ORPHANS + o)); [ "$o" -gt 0 ] && FAILS=$((FAILS + 1))
  for w in 0 1 2; do kill -0 "${PIDS[$w]}" 2>/dev/null || { echo "soak: worker $w exited unexpectedly" >&2; FAILS=$((FAILS + 1)); start_worker $w || exit 2; }; done
  printf "%3d %-6s worker %d  +%4d ms  %s\n" "$i" "$kind" "$j" "$delay_ms" "$verdict" >&2
done

echo
echo "| fault  | injected | completed, right text | named error | wrong | hang | ended before the fault |"
echo "|--------|---------:|----------------------:|------------:|------:|-----:|-----------------------:|"
T=(0 0 0 0 0 0)
for k in "${KINDS[@]}"; do
  printf "| %-6s | %8d | %21d | %11d | %5d | %4d | %22d |\n" "$k" "${FAULTS[$k]}" "${OK[$k]}" "${NAMED[$k]}" "${WRONG[$k]}" "${HANGS[$k]}" "${MISSED[$k]}"
  T[0]=$((T[0] + FAULTS[$k])); T[1]=$((T[1] + OK[$k])); T[2]=$((T[2] + NAMED[$k])); T[3]=$((T[3] + WRONG[$k])); T[4]=$((T[4] + HANGS[$k])); T[5]=$((T[5] + MISSED[$k]))
done
printf "| %-6s | %8d | %21d | %11d | %5d | %4d | %22d |\n" total "${T[@]}"
echo
echo "orphans: $ORPHANS; max time from fault to a named error: ${MAX_ERR} s (bound ${ERROR_BOUND} s); max time from fault to the end of a recovered generation: ${MAX_RECOVER} s"
echo "(coord: 'completed' = a new coordinator got the right text from the same workers right after)"
[ $FAILS -eq 0 ] && echo "soak: PASS" || echo "soak: FAIL ($FAILS failed checks)"
[ $FAILS -eq 0 ]
