#!/usr/bin/env bash
# The SYN path under a flood of completed handshakes: do the repair engine's
# rebuilds (a dozen system calls each, under a lock) hold up the workers'
# SYN-ACKs? One run, side by side, ROUNDS times:
#   kernel   the kernel alone: a web server on port 8080
#   repair   synwall in proxy mode with the repair engine on port 80,
#            relaying to that server; two receive queues, two workers,
#            synack = "afxdp" (every SYN answered by a worker, the path the
#            rebuilds share)
#   kfunc    the same with the kfunc engine: the same workers answer the
#            SYNs, the kernel builds the sockets (no rebuilds), so the
#            difference to "repair" is what the rebuilds cost the SYN path
# For each: bench/prober.py's connect latency (PROBERS clients, SECS) with
# no other load, then while LOADERS processes of THREADS threads each
# complete RATE handshakes a second in all (connect, close; the same load
# offered to both) to the same port, each
# thread from its own source address, spread over SOURCES /24 prefixes
# (many real clients: one address would meet synwall's per-source and
# per-prefix caps, [handoff] max_per_source and the reflection guard,
# which are measured elsewhere).
# Prints handshakes/s, rebuilds/s, the prober's connect p50/p99 and success,
# and the loaded/idle ratio of connect p99 (synwall's beside the kernel's);
# writes bench/results/handshake_load-<time>.json.
# Run as root:  bash bench/handshake_load.sh
#
# Network rules: two namespaces and one veth pair made here, 198.18.0.0/15
# only, no default route, deleted on exit; no flood (every client is a real
# kernel TCP client, bounded by SECS).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
PROBERS=${PROBERS:-4}
LOADERS=${LOADERS:-4}
THREADS=${THREADS:-16}
SOURCES=${SOURCES:-32}     # loader source prefixes: 198.18.10.0/24 on
RATE=${RATE:-3000}         # handshakes per second offered, in all
ROUNDS=${ROUNDS:-2}
[ "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
cargo build --release --locked --quiet --bin synwall
SW=$PWD/target/release/synwall

. bench/testbed.sh
work=$(mktemp -d /tmp/synwall-hsl.XXXXXX)
HTTP= SWPID=
trap 'tb_cleanup $SWPID $HTTP' EXIT
tb_create "swh$(printf '%05x' $$)" 2
mkdir "$work/www"; echo "hello" > "$work/www/index.html"
tb_http_server "$work/www" "$work" 8080
ip netns exec "$S" sysctl -qw net.ipv4.tcp_max_syn_backlog=4096
# The proxy's own connections to its upstream come from one address to one
# port: at thousands a second, TIME-WAIT uses up the ephemeral ports within
# seconds unless they may be reused (what an operator of a proxy sets).
ip netns exec "$S" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000"
ip netns exec "$C" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1
# The loaders' addresses, one per thread, SOURCES /24s; the server reaches
# them through the client (the testbed's route for 198.18.0.0/15).
srcs=()
for t in $(seq 0 $((LOADERS * THREADS - 1))); do
  a=198.18.$((10 + t % SOURCES)).$((2 + t / SOURCES))
  ip -n "$C" addr add "$a/32" dev "$CI"
  srcs+=("$a")
done
# Proxy mode holds six descriptors per session, and the repair engines'
# hand-off one per connection waiting for the proxy ([handoff] backlog,
# 4096): as many sessions as the hard limit here allows (the unit's
# LimitNOFILE is 1048576; a container's may be far lower).
ulimit -n "$(ulimit -Hn)"
MAXCONN=$(( ($(ulimit -n) - 256 - 4096) / 6 ))
MAXCONN=$(( MAXCONN > 10000 ? 10000 : MAXCONN ))
(umask 077; "$SW" gen-secret > "$work/secret")
for engine in repair kfunc; do
  printf '[datapath]\ninterface = "%s"\nstats_socket = "%s"\nsynack = "afxdp"\nqueues = [0, 1]\n[cookie]\nsecret_file = "%s"\n[handoff]\nmode = "proxy"\nengine = "%s"\nupstreams = ["198.18.0.1:8080"]\nmax_connections = %s\n' \
    "$SI" "$work/stats.sock" "$work/secret" "$engine" "$MAXCONN" > "$work/$engine.toml"
done

cat > "$work/load.py" <<'PY'
# One thread per source address given, each completing handshakes
# (connect, close) for SECS at RATE / threads per second (or as fast as it
# can, if slower); prints how many completed.
import socket, sys, threading, time
host, port, secs, rate, srcs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5:]
threads = len(srcs)
gap = threads / rate
done, end = [0] * threads, time.monotonic() + secs
def run(i):
    due = time.monotonic() + gap * i / threads
    while time.monotonic() < end:
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        due += gap
        try:
            socket.create_connection((host, port), timeout=3, source_address=(srcs[i], 0)).close()
            done[i] += 1
        except OSError:
            pass
ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(sum(done))
PY

repaired() { # the workers' rebuilds, done and failed
  "$SW" stats --socket "$work/stats.sock" |
    python3 -c 'import json,sys; w=json.load(sys.stdin)["workers"]; print(sum(x["repair"]["repaired"] for x in w), sum(x["repair"]["failed"] for x in w))'
}

point() { # name port load(0|1): one prober window, with or without the load
  local r0="0 0" r1="0 0" pids=() p l
  [ "$1" = repair ] && r0=$(repaired)
  if [ "$3" = 1 ]; then
    for l in $(seq 0 $((LOADERS - 1))); do
      ip netns exec "$C" python3 "$work/load.py" 198.18.0.1 "$2" "$SECS" "$((RATE / LOADERS))" \
        "${srcs[@]:$((l * THREADS)):$THREADS}" >> "$work/load.$1.$i" &
      pids+=($!)
    done
    sleep 0.5
  fi
  ip netns exec "$C" python3 bench/prober.py 198.18.0.1 "$2" "$PROBERS" "$SECS" > "$work/probe.$1.$3.$i"
  for p in "${pids[@]}"; do wait "$p"; done
  [ "$1" = repair ] && r1=$(repaired)
  read -r d0 f0 <<<"$r0"; read -r d1 f1 <<<"$r1"
  echo "$((d1 - d0)) $((f1 - f0))" > "$work/rebuilds.$1.$3.$i"
}

for i in $(seq "$ROUNDS"); do
  echo "==> round $i: kernel alone" >&2
  point kernel 8080 0; point kernel 8080 1
  for engine in repair kfunc; do
    echo "==> round $i: synwall, proxy mode, $engine engine" >&2
    ip netns exec "$S" "$SW" run --config "$work/$engine.toml" >/dev/null 2>"$work/synwall.log" &
    SWPID=$!
    tb_wait_stats "$SW" "$work/stats.sock"
    point "$engine" 80 0; point "$engine" 80 1
    # How the proxy's sessions ended (what failed clients met).
    "$SW" stats --socket "$work/stats.sock" | python3 -c 'import json,sys; p=json.load(sys.stdin).get("proxy",{}); print("   proxy:", " ".join(f"{k}={v}" for k, v in p.items() if v and k not in ("bytes_to_client", "bytes_to_upstream", "loops")))' >&2
    kill -TERM "$SWPID"; wait "$SWPID" || true; SWPID=
  done
  sleep 2 # the loaders' TIME-WAIT ports are reused, not exhausted
done

mkdir -p bench/results
python3 - "$work" "bench/results/handshake_load-$(date +%Y%m%dT%H%M%S).json" "$ROUNDS" "$SECS" "$LOADERS" "$THREADS" <<'PY'
import glob, json, statistics as st, sys
w, out, rounds, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def med(v):
    v = [x for x in v if x is not None]  # a window with no success has no latency
    return st.median(v) if v else float("nan")
res = {"secs": secs, "loaders": int(sys.argv[5]), "threads": int(sys.argv[6]), "rounds": rounds}
print(f"\n{'':34}{'handshakes/s':>13}{'rebuilds/s':>11}{'failed/s':>9}{'connect p50':>12}{'p99':>8}{'ok':>8}")
for name, label in [("kernel", "kernel alone"), ("repair", "synwall proxy, repair engine"),
                    ("kfunc", "synwall proxy, kfunc engine")]:
    for load in ("0", "1"):
        probes = [json.load(open(f)) for f in sorted(glob.glob(f"{w}/probe.{name}.{load}.*"))]
        loads = [sum(int(l) for l in open(f)) / secs for f in glob.glob(f"{w}/load.{name}.*")] if load == "1" else []
        counts = [open(f).read().split() for f in glob.glob(f"{w}/rebuilds.{name}.{load}.*")]
        rebuilds = [int(c[0]) / secs for c in counts]
        failed = [int(c[1]) / secs for c in counts]
        r = {"handshakes_per_s": med(loads), "rebuilds_per_s": med(rebuilds) if name == "repair" else None,
             "rebuild_failures_per_s": med(failed) if name == "repair" else None,
             "connect_p50_ms": med([p["connect_p50_ms"] for p in probes]),
             "connect_p99_ms": med([p["connect_p99_ms"] for p in probes]),
             "success": med([p["success"] for p in probes])}
        res[f"{name}_{'loaded' if load == '1' else 'idle'}"] = r
        r["success_per_round"] = [p["success"] for p in probes]
        tag = f"{label}, {'loaded' if load == '1' else 'idle'}"
        hs = f"{r['handshakes_per_s']:.0f}" if load == "1" else "-"
        rb = f"{r['rebuilds_per_s']:.0f}" if r["rebuilds_per_s"] is not None else "-"
        fl = f"{r['rebuild_failures_per_s']:.1f}" if r["rebuild_failures_per_s"] is not None else "-"
        print(f"{tag:34}{hs:>13}{rb:>11}{fl:>9}{r['connect_p50_ms']:>12.2f}{r['connect_p99_ms']:>8.2f}{r['success']:>8.4f}"
              f"  (per round: {' '.join(f'{x:.4f}' for x in r['success_per_round'])})")
for name in ("kernel", "repair", "kfunc"):
    ratio = res[f"{name}_loaded"]["connect_p99_ms"] / res[f"{name}_idle"]["connect_p99_ms"]
    res[f"{name}_p99_ratio"] = ratio
    print(f"connect p99 loaded/idle, {name}: {ratio:.2f}x")
print(f"(medians of {rounds} rounds; machine: {len(open('/proc/cpuinfo').read().split('processor')) - 1} CPUs)")
json.dump(res, open(out, "w"), indent=1)
print(f"results: {out}")
PY
