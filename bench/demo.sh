#!/usr/bin/env bash
# synwall demo (the README's main-job command). Run as root on Debian 12:
#   bash bench/demo.sh
#
# A web server (python's http.server, unmodified handler) in one network namespace,
# real clients (curl) in another, and a SYN flood with spoofed sources from
# 198.18.0.0/15. Five runs, same clients, same flood:
#   1. the server alone, no flood        (the baseline)
#   2. the server alone under the flood  (the kernel's own SYN cookies)
#   3. the server behind synwall under the same flood (kernel-mode hand-off)
# on a testbed whose client veth has a sink (an XDP program that drops the
# answers to spoofed sources, as a wire would carry them away, and lets the
# veth deliver XDP answers at all), then on the bare testbed a container
# has (no program on the client veth, so XDP answers are lost in the veth):
#   4. the server alone under the flood
#   5. the server behind synwall under the same flood
# and a table: requests served and connect latency.
#
# The flood's rate is chosen in the same run: first the server alone, then
# synwall, each take 2 s of the generator's maximum, and the SYN-ACKs per
# second that reach the client side are their capacities on this machine
# now. The flood is then 3x the kernel's capacity (well above what the
# server alone can answer), but at most 0.7 of synwall's, paced evenly (the
# live engine with a 64-frame bucket) so that the veth's 256-frame ring sees
# the rate and not bursts.
#
# Network rules: namespaces and a veth pair made here, addresses from
# 198.18.0.0/15 only, no default route; the flood is bounded by count and
# time; everything is deleted on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-}                # flood SYNs per second (default: chosen from the capacities)
REQUESTS=${REQUESTS:-200}     # client requests per run
PARALLEL=${PARALLEL:-10}      # concurrent clients
FLOOD_SECS=${FLOOD_SECS:-15}  # upper bound of each flood
RING=${RING:-2048}            # synwall's AF_XDP ring size ([datapath] ring_size)
SYNACK=${SYNACK:-auto}        # who answers SYNs ([datapath] synack)
# The attacker is another machine in real life: keep the generator off the
# CPU of synwall's worker (CPU 0), the same for every run.
FLOOD_CPU=${FLOOD_CPU:-$(( $(nproc) - 1 ))}

[ "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
echo "==> building synwall (release)"
cargo build --release --locked --quiet --bin synwall --bin synwall-flood --bin synwall-testbed-xdp
SW=$PWD/target/release/synwall FLOOD=$PWD/target/release/synwall-flood
TBX=$PWD/target/release/synwall-testbed-xdp

. bench/testbed.sh
work=$(mktemp -d /tmp/synwall-demo.XXXXXX)
HTTP= SWPID= FLOODPID= XDPPID=
trap 'tb_cleanup $FLOODPID $SWPID $HTTP $XDPPID' EXIT
tb_create "swd$(printf '%05x' $$)"
# As on a real wire, the answers to spoofed sources leave and are gone: the
# client veth's sink drops them before the client's stack, for all three
# runs. The server side works on CPU 0, the client side (generator and the
# client veth's receive work) on the generator's CPU.
tb_xdp "$TBX" sink 3600
tb_sides 0 "$FLOOD_CPU"

mkdir "$work/www"; echo "hello from behind synwall" > "$work/www/index.html"
tb_http_server "$work/www" "$work"

# REQUESTS curls, PARALLEL at a time; one line each: HTTP code, connect seconds.
probe() {
  seq "$REQUESTS" | ip netns exec "$C" xargs -P "$PARALLEL" -I{} \
    curl -s -o /dev/null --connect-timeout 3 --max-time 6 -w '%{http_code} %{time_connect}\n' \
    http://198.18.0.1/index.html > "$work/probe.$1" || true
}

# Frames the client veth could not hand to the server veth (its receive
# ring full): SYNs lost on the way, legitimate ones among them.
ring_drops() { ip netns exec "$C" cat "/sys/class/net/$CI/statistics/tx_dropped"; }

flood_start() {
  ip netns exec "$C" taskset -c "$FLOOD_CPU" "$FLOOD" --interface "$CI" --dst-mac "$SRV_MAC" --dst 198.18.0.1 --dport 80 \
    --rate "$RATE" --burst 64 --count $((RATE * FLOOD_SECS)) --duration "$FLOOD_SECS" > "$work/flood.$1" &
  FLOODPID=$!
  sleep 1   # let the flood reach its rate before the clients start
}
flood_stop() { kill -INT "$FLOODPID" 2>/dev/null || true; wait "$FLOODPID" 2>/dev/null || true; FLOODPID=; }

# Answers that reached the client side (the sink counts each frame it sees).
answers() { ip netns exec "$C" cat "/sys/class/net/$CI/statistics/rx_packets"; }
# SYN-ACKs per second at the generator's maximum, 2 s; one JSON line.
capacity() {
  local a0 out
  a0=$(answers)
  out=$(ip netns exec "$C" taskset -c "$FLOOD_CPU" "$FLOOD" --interface "$CI" --dst-mac "$SRV_MAC" \
        --dst 198.18.0.1 --dport 80 --count 20000000 --duration 2)
  sleep 0.5
  python3 -c 'import json,sys; f=json.loads(sys.argv[1]); print(json.dumps(dict(offered=round(f["pps"]), answered=round((int(sys.argv[3])-int(sys.argv[2]))/f["seconds"]))))' \
    "$out" "$a0" "$(answers)"
}
start_synwall() { # log file, final-stats file
  ip netns exec "$S" "$SW" run --config "$work/synwall.toml" > "$2" 2> "$1" &
  SWPID=$!
  tb_wait_stats "$SW" "$work/stats.sock"
}
stop_synwall() { kill -TERM "$SWPID"; wait "$SWPID"; SWPID=; }

(umask 077; "$SW" gen-secret > "$work/secret")
# The attack detector's defaults but leave_secs: the attack ends 2 s after
# the flood, and both events are in the log before synwall stops.
printf "[datapath]\ninterface = \"%s\"\nring_size = ${RING}\nsynack = \"${SYNACK}\"\nstats_socket = \"%s\"\n[cookie]\nsecret_file = \"%s\"\n[attack]\nleave_secs = 2\n" \
  "$SI" "$work/stats.sock" "$work/secret" > "$work/synwall.toml"

echo "==> 0/5 capacities at the generator's maximum: the server alone, then behind synwall (2 s each)"
capacity > "$work/capacity.kernel"
start_synwall "$work/synwall.capacity.log" /dev/null
capacity > "$work/capacity.synwall"
stop_synwall
sleep 1
if [ -z "$RATE" ]; then
  RATE=$(python3 - "$work" <<'PY'
import json, sys
cs = json.load(open(f"{sys.argv[1]}/capacity.synwall"))
k = json.load(open(f"{sys.argv[1]}/capacity.kernel"))["answered"]
s = cs["answered"]
if k < 1000 or s < 1000:
    sys.exit(f"the capacities measured make no sense (server alone {k}/s, synwall {s}/s): "
             "did the flood reach the server? (RATE=... sets the rate by hand)")
rate = min(3 * k, int(0.7 * s))
if rate < 1.5 * k:
    print(f"warning: synwall's capacity now ({s}/s) is too close to the kernel's ({k}/s) for the demo to "
          f"show much: synwall answered {s / max(cs['offered'], 1):.0%} of the {cs['offered']} SYNs/s "
          "the generator offered, so the generator or the testbed may cap it rather than synwall; "
          "or the machine is busy", file=sys.stderr)
print(max(rate // 1000 * 1000, 1000))
PY
)
fi

echo "==> 1/5 the server alone, no flood"
probe baseline
echo "==> 2/5 the server alone under a ${RATE} SYN/s flood"
d0=$(ring_drops); flood_start kernel; probe kernel; flood_stop; echo "kernel $(( $(ring_drops) - d0 ))" > "$work/drops"

echo "==> 3/5 the server behind synwall under the same flood"
start_synwall "$work/synwall.log" "$work/final.json"
d0=$(ring_drops); flood_start synwall; probe synwall; flood_stop; echo "synwall $(( $(ring_drops) - d0 ))" >> "$work/drops"
sleep 3   # leave_secs of calm: the attack ends
"$SW" stats --socket "$work/stats.sock" > "$work/stats.json"
stop_synwall

# The bare testbed: the sink goes, as in a container nothing on the client's
# side runs XDP.
tb_xdp_stop > /dev/null
echo "==> 4/5 bare testbed (no XDP program on the client veth): the server alone under the flood"
d0=$(ring_drops); flood_start bare_kernel; probe bare_kernel; flood_stop; echo "bare_kernel $(( $(ring_drops) - d0 ))" >> "$work/drops"
echo "==> 5/5 bare testbed: the server behind synwall under the same flood"
start_synwall "$work/synwall.bare.log" "$work/final.bare.json"
d0=$(ring_drops); flood_start bare_synwall; probe bare_synwall; flood_stop; echo "bare_synwall $(( $(ring_drops) - d0 ))" >> "$work/drops"
"$SW" stats --socket "$work/stats.sock" > "$work/stats.bare.json"
stop_synwall

python3 - "$work" "$REQUESTS" "$RATE" <<'PY'
import json, sys
work, n, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def result(name):
    lines = [l.split() for l in open(f"{work}/probe.{name}") if l.strip()]
    ok = [float(t) * 1000 for code, t in lines if code == "200"]
    ok.sort()
    pct = lambda q: ok[min(len(ok) - 1, int(q * len(ok)))] if ok else float("nan")
    return len(ok), pct(0.5), pct(0.99)
stats = json.load(open(f"{work}/stats.json"))
synacks = sum(w["synacks"] for w in stats["workers"]) + stats["xdp"]["synack_xdp"]
cap = {k: json.load(open(f"{work}/capacity.{k}")) for k in ("kernel", "synwall")}
print(f"\nCapacities measured in this run (SYN-ACKs/s at the generator's maximum, "
      f"{cap['kernel']['offered']:,} and {cap['synwall']['offered']:,} SYNs/s offered): "
      f"the server alone {cap['kernel']['answered']:,}/s, behind synwall {cap['synwall']['answered']:,}/s.")
print(f"The flood: {rate:,} SYNs/s paced evenly, {rate / max(cap['kernel']['answered'], 1):.1f}x the server's "
      f"capacity and {rate / max(cap['synwall']['answered'], 1):.2f} of synwall's.")
print(f"\nA web server under a SYN flood ({rate} spoofed SYNs/s), {n} real client requests per run")
print(f"{'':34}{'served':>10}{'connect p50':>14}{'connect p99':>14}")
flooded = ("kernel", "synwall", "bare_kernel", "bare_synwall")
for name, label in [("baseline", "server alone, no flood"), ("kernel", "server alone, flood"),
                    ("synwall", "behind synwall, same flood"),
                    ("bare_kernel", "bare veth: server alone, flood"),
                    ("bare_synwall", "bare veth: behind synwall")]:
    ok, p50, p99 = result(name)
    print(f"{label:<34}{f'{ok}/{n}':>10}{p50:>11.1f} ms{p99:>11.1f} ms")
drops = dict(l.split() for l in open(f"{work}/drops"))
for name in flooded:
    f = json.load(open(f"{work}/flood.{name}"))
    ms = f["per_ms"]
    print(f"flood during '{name}': {f['sent']} SYNs at {f['pps']:.0f}/s, per ms p1/p50/p99 "
          f"{ms['p1']}/{ms['p50']}/{ms['p99']} (the generator shares its CPU with the clients), "
          f"{drops[name]} frames lost before the server (the veth's receive ring full)")
x = stats["xdp"]
print(f"synwall answered {synacks} SYNs with cookie SYN-ACKs ({x['synack_xdp']} of them in XDP, "
      f"{x['syn_backlog']} while its worker was backed up before its answers were seen to leave), handed "
      f"{x['handoff_ok']} connections to the server ({x['handoff_failed']} hand-offs failed), dropped "
      f"{x['drop_bad_cookie']} bad ACKs; no half-open state was kept.")
print("synwall's log of the attack:")
for line in open(f"{work}/synwall.log"):
    if "attack started" in line or "attack ended" in line:
        print("  " + line.rstrip())
bare = json.load(open(f"{work}/stats.bare.json"))
a, bx = bare.get("xdp_answers", {}), bare["xdp"]
bsyn = sum(w["synacks"] for w in bare["workers"])
print(f"On the bare veth synwall's XDP answers were {a.get('state', '?')} ({a.get('reason', '')}); "
      f"its workers answered {bsyn} SYNs, {bx['syn_kernel']} went to the kernel, "
      f"{bx['synack_xdp']} were answered in XDP ({a.get('failed', 0)} of those failed in the driver); "
      f"XDP ran in {bare['xdp_mode']} mode at the end.")
for line in open(f"{work}/synwall.bare.log"):
    if "XDP answers" in line:
        print("  " + line.rstrip())
ok_base = result("baseline")[0]
sys.exit(0 if ok_base > 0 else 1)
PY
