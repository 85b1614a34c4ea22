#!/usr/bin/env bash
# The relay benchmark (issue 5): events posted to sluice-relay by wrk with a
# Lua body, one subscriber (a local sluice server answering 200), and, in the
# same run on the same machine, http_hello for the ratio.
#
#   bash bench/relay/run.sh            # DURATION=10s CONNS=64 SERVER_CPU=1 CLIENT_CPU=0
#
# Pinned as ../shared/peers/WORKLOADS.md pins the HTTP workloads: the server
# under test (the relay, then sluice-bench-http --mode hello) on SERVER_CPU,
# wrk on CLIENT_CPU; the subscriber shares CLIENT_CPU with wrk (it is the
# outside world, like the load generator). Prints RESULT lines:
#   relay_events_accepted  rps   202 answers per second
#   relay_deliveries       rps   deliveries answered 2xx per second, same window
#   relay_accept_p99       us    wrk's 99th percentile of POST .../events
#   http_hello             rps   the plain hello server, same pinning
# and the ratio relay_events_accepted / http_hello (target >= 0.30), the
# relay's queue depth at the end of the window and its largest sample during
# it, and how long the backlog took to drain afterwards.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
RELAY_PORT=${RELAY_PORT:-18480}
SINK_PORT=${SINK_PORT:-18481}
HELLO_PORT=${HELLO_PORT:-18482}
WORKDIR=${WORKDIR:-build/bench-relay}
RELAY_FLAGS=${RELAY_FLAGS:-}  # extra sluice-relay flags (defaults otherwise)

die() { echo "bench/relay: $*" >&2; exit 1; }
(($(nproc) >= 2)) || die "needs 2 CPUs (server on SERVER_CPU, wrk on CLIENT_CPU)"
for tool in wrk curl taskset; do
  if ! command -v "$tool" >/dev/null; then
    pkg=$tool; [[ $tool == taskset ]] && pkg=util-linux
    echo "bench/relay: installing $pkg" >&2
    apt-get -o DPkg::Lock::Timeout=600 update >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$pkg" >&2
  fi
done

cmake --preset release >/dev/null
cmake --build --preset release --target sluice-relay sluice-bench-http >/dev/null
BIN=build/release/bin
mkdir -p "$WORKDIR"
secs=${DURATION%s}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_up() {  # wait_up URL: until it answers (a script, not a test: polling is fine)
  for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  die "nothing answers $1"
}
metric() {  # metric NAME: the value of one sample line of the relay's /metrics
  curl -fs "http://127.0.0.1:$RELAY_PORT/metrics" | awk -v n="$1" '$1 == n && !done { print $2; done = 1 }'
}
wrk_p99_us() {  # the 99% line of wrk --latency, in microseconds
  awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+/, "", v);
        f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : 0; printf "%.0f", v * f }' "$1"
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }  # utime + stime of a pid
wrk_requests() { awk '/requests in/ { print $1 }' "$1"; }
wrk_non2xx() { awk '/Non-2xx or 3xx responses/ { print $5 }' "$1"; }
wrk_seconds() { awk '/requests in/ { s = $4; sub(/s,?$/, "", s); print s }' "$1"; }

# ---- the relay -----------------------------------------------------------------
taskset -c "$CLIENT_CPU" "$BIN/sluice-bench-http" --listen "127.0.0.1:$SINK_PORT" --mode sink \
  2>"$WORKDIR/sink.log" &
pids+=($!)
taskset -c "$SERVER_CPU" "$BIN/sluice-relay" --listen "127.0.0.1:$RELAY_PORT" \
  --rate 1000000000 --burst 1000000000 $RELAY_FLAGS >"$WORKDIR/relay.log" 2>&1 &
relay_pid=$!
pids+=($relay_pid)
wait_up "http://127.0.0.1:$RELAY_PORT/readyz"
wait_up "http://127.0.0.1:$SINK_PORT/hello"
curl -fs -X POST "http://127.0.0.1:$RELAY_PORT/v1/topics/bench/subscriptions" \
  -d "{\"url\": \"http://127.0.0.1:$SINK_PORT/hook\"}" >/dev/null || die "subscribe failed"

d0=$(metric 'sluice_relay_deliveries_total{result="delivered"}')
t0=$(cpu_ticks "$relay_pid"); w0=$(date +%s.%N)
( max=0; while sleep 0.5; do q=$(metric sluice_relay_queue_depth || echo 0); q=${q%.*}
    ((q > max)) && max=$q; echo "$max" >"$WORKDIR/queue_max"; done ) &
sampler=$!
pids+=($sampler)
taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s bench/relay/post_event.lua \
  "http://127.0.0.1:$RELAY_PORT/v1/topics/bench/events" >"$WORKDIR/wrk-relay.log"
d1=$(metric 'sluice_relay_deliveries_total{result="delivered"}')
t1=$(cpu_ticks "$relay_pid"); w1=$(date +%s.%N)
relay_cpu=$(awk -v a="$t0" -v b="$t1" -v s="$w0" -v e="$w1" -v hz="$(getconf CLK_TCK)" \
  'BEGIN { printf "%.0f", 100 * (b - a) / hz / (e - s) }')
q_end=$(metric sluice_relay_queue_depth)
kill "$sampler" 2>/dev/null || true
q_max=$(cat "$WORKDIR/queue_max" 2>/dev/null || echo 0)
drain_start=$(date +%s.%N)
for _ in $(seq 600); do
  [[ $(metric sluice_relay_deliveries_outstanding) == 0 ]] && break
  sleep 0.1
done
drain_s=$(awk -v a="$drain_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
failed=$(metric 'sluice_relay_deliveries_total{result="failed"}')
kill -TERM "$relay_pid"
relay_exit=0
wait "$relay_pid" || relay_exit=$?

reqs=$(wrk_requests "$WORKDIR/wrk-relay.log")
non2xx=$(wrk_non2xx "$WORKDIR/wrk-relay.log"); non2xx=${non2xx:-0}
wsecs=$(wrk_seconds "$WORKDIR/wrk-relay.log")
accepted_rps=$(awk -v r="$reqs" -v n="$non2xx" -v s="$wsecs" 'BEGIN { printf "%.0f", (r - n) / s }')
deliv_rps=$(awk -v a="$d0" -v b="$d1" -v s="$wsecs" 'BEGIN { printf "%.0f", (b - a) / s }')
p99=$(wrk_p99_us "$WORKDIR/wrk-relay.log")

# ---- http_hello, same pinning --------------------------------------------------
taskset -c "$SERVER_CPU" "$BIN/sluice-bench-http" --listen "127.0.0.1:$HELLO_PORT" --mode hello \
  2>"$WORKDIR/hello.log" &
pids+=($!)
wait_up "http://127.0.0.1:$HELLO_PORT/hello"
taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency \
  "http://127.0.0.1:$HELLO_PORT/hello" >"$WORKDIR/wrk-hello.log"
hello_rps=$(awk -v r="$(wrk_requests "$WORKDIR/wrk-hello.log")" -v s="$(wrk_seconds "$WORKDIR/wrk-hello.log")" \
  'BEGIN { printf "%.0f", r / s }')

echo "RESULT impl=sluice workload=relay_events_accepted value=$accepted_rps unit=rps"
echo "RESULT impl=sluice workload=relay_deliveries value=$deliv_rps unit=rps"
echo "RESULT impl=sluice workload=relay_accept_p99 value=$p99 unit=us"
echo "RESULT impl=sluice workload=http_hello value=$hello_rps unit=rps"
awk -v a="$accepted_rps" -v d="$deliv_rps" -v h="$hello_rps" 'BEGIN {
  printf "# relay accepted/hello = %.2f, delivered/hello = %.2f (target >= 0.30)\n", a / h, d / h }'
echo "# wrk: $reqs requests in ${wsecs}s, non-2xx $non2xx (503 queue full / 429 would count here)"
echo "# queue depth: $q_end at the end of the window, largest sample $q_max (capacity 10000);" \
     "backlog drained ${drain_s}s after wrk stopped; failed deliveries: ${failed:-0}"
echo "# relay CPU: ${relay_cpu}% of one CPU during the window (100% = the relay was the bottleneck)"
echo "# relay exit status after SIGTERM: $relay_exit ($(grep -c '"delivery dropped"' "$WORKDIR/relay.log" || true) dropped)"
echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); relay on CPU $SERVER_CPU, wrk + subscriber on CPU $CLIENT_CPU; wrk -t1 -c$CONNS -d$DURATION"
