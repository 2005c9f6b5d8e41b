#!/usr/bin/env bash
# Runs every benchmark of issue #8 in turn and records the figures.
#
#   scripts/bench-all.sh [--quick]
#
# Output goes to the terminal and to target/bench-results/<UTC time>/ (one log per
# benchmark plus summary.txt with the machine, the load average and the
# result lines). Everything runs under `nice -n 10`: the machines this
# project is built on are shared, which is why every figure is a ratio
# against a baseline measured in the same run. Needs tor (and tor-gencert)
# for the Tor part, and `ulimit -n` of at least 25,000 for 10,000 idle
# clients (the memory bench says so and runs 1,000 only otherwise).
# --quick: shorter runs (fewer rounds and posts; the proto benches skip
# criterion's runs and print only their interleaved-loop ratios).
set -uo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
OUT="target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
FAILED=()

note() { echo "$*" | tee -a "$SUMMARY"; }

run() {
    local name="$1"; shift
    local start=$SECONDS
    echo "::: $name: $*"
    note "== $name (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
    if nice -n 10 "$@" 2>&1 | tee "$OUT/$name.log"; then
        note "   took $((SECONDS - start)) s; log: $OUT/$name.log"
    else
        note "   FAILED after $((SECONDS - start)) s; log: $OUT/$name.log"
        FAILED+=("$name")
    fi
}

note "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB, $(rustc --version)"
note "started $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo "::: building (release)"
nice -n 10 cargo build --release -p cwtch-node --features arti --bins \
    --example idle_memory --example fanout --example tor_rtt --example ingest_tcp \
    --example arti_rtt --example stream_overhead || exit 1
EX=target/release/examples

# 1. Core (cwtch-proto): handshake, channel, detection, sync.
if [ "$QUICK" = 1 ]; then
    # The interleaved loops print their ratio first; criterion's own runs
    # are skipped by a filter that matches nothing.
    run proto cargo bench -p cwtch-proto -- --exact none
else
    run proto cargo bench -p cwtch-proto
fi

# 2. Durable ingest: posts/s, p50/p99 ack latency, CPU per post.
if [ "$QUICK" = 1 ]; then
    BENCH_SECS=2 run ingest cargo bench -p cwtch-node --bench ingest
else
    run ingest cargo bench -p cwtch-node --bench ingest
fi

# 2b. The same over the development transport (loopback TCP): the real
#     server with its channel, against one SQLite transaction per post.
if [ "$QUICK" = 1 ]; then run ingest_tcp "$EX/ingest_tcp" 2 64; else run ingest_tcp "$EX/ingest_tcp" 5 16,64,256; fi

# 3. Fan-out of one post to 1,000 subscribers.
if [ "$QUICK" = 1 ]; then run fanout "$EX/fanout" 1000 10; else run fanout "$EX/fanout" 1000 50; fi

# 4. Memory per idle connection at 1,000 and 10,000 clients.
if [ "$(ulimit -n)" -lt 25000 ]; then
    ulimit -n 25000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
if [ "$(ulimit -n)" -ge 20000 ]; then
    run idle_memory "$EX/idle_memory" 1000 10000
else
    note "   ulimit -n is $(ulimit -n) (hard $(ulimit -Hn)): 10,000 clients need ~20,000 descriptors; 1,000 only"
    run idle_memory "$EX/idle_memory" 1000
fi

# 5. Over Tor: round trip vs raw TCP on the same circuit; time to reachable.
if [ "$QUICK" = 1 ]; then run tor "$EX/tor_rtt" 30 2; else run tor "$EX/tor_rtt" 200 3; fi

# 6. The built-in Tor (arti) against C tor on one private network: round
#    trips on four paths, publish to reachable, `server run` start to first
#    handshake; and what the node's stream enum costs the SOCKS path.
if [ "$QUICK" = 1 ]; then run arti "$EX/arti_rtt" 30 1; else run arti "$EX/arti_rtt" 200 3; fi
if [ "$QUICK" = 1 ]; then run stream "$EX/stream_overhead" 2000 3; else run stream "$EX/stream_overhead" 20000 5; fi

note ""
note "== results"
grep -hE "ratio|goal|KiB/conn|^ +[0-9]+ +[0-9.]+ +[0-9.]+|p50 ms|^ours|^floor|^baseline|^raw|^group|median|up in|^scenario|^server" \
    "$OUT"/proto.log "$OUT"/ingest.log "$OUT"/ingest_tcp.log "$OUT"/fanout.log \
    "$OUT"/idle_memory.log "$OUT"/tor.log "$OUT"/arti.log "$OUT"/stream.log 2>/dev/null | grep -v "^Benchmarking" | tee -a "$SUMMARY"
note "finished $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${#FAILED[@]}" -gt 0 ]; then
    note "FAILED: ${FAILED[*]}"
    exit 1
fi
