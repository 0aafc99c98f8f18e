#!/usr/bin/env bash
# The comparison runner: one testbed, one generator, one prober, one run,
# the same floods against each system in turn:
#   kernel_sc1     the kernel alone, net.ipv4.tcp_syncookies=1 (cookies when
#                  the SYN queue overflows), a plain server
#   kernel_sc2     the kernel alone, tcp_syncookies=2 (cookies always)
#   synproxy       netfilter SYNPROXY (iptables) in front of the same server
#   synwall_afxdp, synwall_xdp, synwall_auto
#                  synwall, kernel-mode hand-off to the same server, with
#                  [datapath] synack = "afxdp", "xdp", "auto" (the default)
#   synwall_proxy  synwall (synack = "auto"), proxy mode, relaying to it
# and first, at the generator's maximum, the testbed's limits: an XDP
# program on the server veth that drops every frame, one that sends it
# back unmodified (bounce), one that answers with a cookie-less SYN-ACK
# (reflect).
#
# For each system: a no-flood baseline, then a ladder of paced flood rates
# (RATES), then the generator's maximum. Per point: SYN-ACKs per second,
# CPU seconds per million SYNs (all CPUs), the prober's success rate and
# latency. A system's knee is the highest paced rate at which success stays
# >= 99.9% and connect p99 <= 2x its own no-flood p99 or that + 10 ms,
# whichever is more (a lost SYN costs a 1 s retransmit; sub-ms p99s double
# with scheduling noise). Output: a table,
# bench/results/compare-<time>.json and .png (gnuplot).
# Run as root:  bash bench/compare.sh   (RATES, SYSTEMS, SECS to choose)
#
# The testbed as in bench/synack_rate.sh: the client veth's sink drops the
# answers to spoofed sources for every system; the server side's receive
# work is on CPU 0 and the client side's (generator, client veth) on CPU 1,
# both at softirq-like priority.
#
# Network rules: two namespaces made here, one veth pair, 198.18.0.0/15
# only, no default route; every flood is bounded by count and time; the
# namespaces are deleted on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# Paced rates use the live-frames engine with a 64-frame bucket: frames
# spaced evenly at up to 1.5 M/s here (bench/bpf/flood.bpf.c paces in the
# kernel), so a knee is the system's and not the generator's bursts.
RATES=${RATES:-"100000 200000 300000 450000 600000 800000 1000000 1200000"}
MAX=1000000000               # "as fast as the generator goes"
SECS=${SECS:-6}              # prober window per point; the flood lasts SECS + 3
CONC=${CONC:-8}              # prober clients
SYSTEMS=${SYSTEMS:-"kernel_sc1 kernel_sc2 synproxy synwall_afxdp synwall_xdp synwall_auto synwall_proxy"}
LIMITS=${LIMITS:-"drop bounce reflect"}
GEN_CPU=${GEN_CPU:-$(( $(nproc) - 1 ))}   # the attacker's CPU, off synwall's worker (CPU 0)

[ "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
command -v gnuplot >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
cargo build --release --locked --quiet --bin synwall --bin synwall-flood --bin synwall-testbed-xdp
SW=$PWD/target/release/synwall FLOOD=$PWD/target/release/synwall-flood
TBX=$PWD/target/release/synwall-testbed-xdp

. bench/testbed.sh
work=$(mktemp -d /tmp/synwall-cmp.XXXXXX)
HTTP= SWPID= FLOODPID= XDPPID= SINKPID=
trap 'tb_cleanup $FLOODPID $SWPID $HTTP $XDPPID $SINKPID' EXIT
tb_create "swc$(printf '%05x' $$)"
tb_xdp "$TBX" sink 3600; SINKPID=$XDPPID; XDPPID=
tb_sides 0 "$GEN_CPU"
mkdir "$work/www"; echo "hello" > "$work/www/index.html"
tb_http_server "$work/www" "$work" 8080
ip netns exec "$S" sysctl -qw net.ipv4.tcp_max_syn_backlog=4096
ip netns exec "$C" ping -c1 -W1 198.18.0.1 >/dev/null

(umask 077; "$SW" gen-secret > "$work/secret")
for sys in synwall_afxdp synwall_xdp synwall_auto synwall_proxy; do
  mode=kernel port=8080 synack=${sys#synwall_}
  [ "$sys" = synwall_proxy ] && mode=proxy port=80 synack=auto
  printf '[datapath]\ninterface = "%s"\nstats_socket = "%s"\nsynack = "%s"\n[protect]\nports = [%s]\n[cookie]\nsecret_file = "%s"\n[handoff]\nmode = "%s"\nupstreams = ["198.18.0.1:8080"]\n' \
    "$SI" "$work/stats.sock" "$synack" "$port" "$work/secret" "$mode" > "$work/$sys.toml"
done

synproxy() { # -A or -D: SYNPROXY for port 8080 on the server veth
  local r
  for r in "-t raw $1 PREROUTING -i $SI -p tcp --dport 8080 --syn -j CT --notrack" \
           "$1 INPUT -i $SI -p tcp --dport 8080 -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY --sack-perm --timestamp --wscale 7 --mss 1460" \
           "$1 INPUT -i $SI -p tcp --dport 8080 -m conntrack --ctstate INVALID -j DROP"; do
    # shellcheck disable=SC2086
    ip netns exec "$S" iptables $r
  done
}

setup_system() { # name -> sets PORT
  PORT=8080
  case $1 in
    kernel_sc1) ip netns exec "$S" sysctl -qw net.ipv4.tcp_syncookies=1 ;;
    kernel_sc2) ip netns exec "$S" sysctl -qw net.ipv4.tcp_syncookies=2 ;;
    synproxy)
      ip netns exec "$S" sysctl -qw net.ipv4.tcp_syncookies=1 net.netfilter.nf_conntrack_tcp_loose=0
      synproxy -A ;;
    synwall_*)
      [ "$1" = synwall_proxy ] && PORT=80
      ip netns exec "$S" sysctl -qw net.ipv4.tcp_syncookies=1
      ip netns exec "$S" "$SW" run --config "$work/$1.toml" >/dev/null 2>"$work/synwall.log" &
      SWPID=$!
      tb_wait_stats "$SW" "$work/stats.sock" ;;
  esac
}
teardown_system() {
  case $1 in
    synproxy) synproxy -D ;;
    synwall_*) kill -TERM "$SWPID"; wait "$SWPID" || true; SWPID= ;;
  esac
}

rx()   { ip netns exec "$C" cat "/sys/class/net/$CI/statistics/rx_packets"; }
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }         # all CPUs
srv_busy() { awk '/^cpu0 /{print $2+$3+$4+$7+$8}' /proc/stat; }    # the server side's CPU
HZ=$(getconf CLK_TCK)

point() { # system rate -> one JSON line appended to $work/points
  local sys=$1 rate=$2 r0 b0 r1 b1 c0 c1 flood='{"sent":0,"seconds":0,"pps":0}' probe
  r0=$(rx); b0=$(busy); c0=$(srv_busy)
  if [ "$rate" -gt 0 ]; then
    local dur=$((SECS + 3))
    local pace=(--rate "$rate" --burst 64); [ "$rate" -ge "$MAX" ] && pace=()
    ip netns exec "$C" taskset -c "$GEN_CPU" "$FLOOD" --interface "$CI" --dst-mac "$SRV_MAC" \
      --dst 198.18.0.1 --dport "$PORT" "${pace[@]}" --count $((rate < 50000000 ? rate * dur : 50000000)) \
      --duration "$dur" > "$work/flood.out" &
    FLOODPID=$!
    sleep 1
  fi
  probe=$(ip netns exec "$C" python3 bench/prober.py 198.18.0.1 "$PORT" "$CONC" "$SECS")
  if [ -n "$FLOODPID" ]; then wait "$FLOODPID"; FLOODPID=; flood=$(cat "$work/flood.out"); fi
  sleep 0.3
  r1=$(rx); b1=$(busy); c1=$(srv_busy)
  python3 - "$sys" "$rate" "$flood" "$probe" "$r0" "$r1" "$b0" "$b1" "$HZ" "$c0" "$c1" >> "$work/points" <<'PY'
import json, sys
sysname, rate, flood, probe = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
r0, r1, b0, b1, hz, c0, c1 = map(int, sys.argv[5:12])
secs = flood["seconds"] or 1
cpu = (b1 - b0) / hz
srv = (c1 - c0) / hz
p = dict(system=sysname, rate=rate, offered_pps=round(flood["pps"]), syns=flood["sent"],
         synacks_per_s=round((r1 - r0) / secs) if flood["sent"] else 0,
         cpu_s=round(cpu, 2), cpu_s_per_million_syns=round(cpu / (flood["sent"] / 1e6), 3) if flood["sent"] else None,
         srv_cpu_s_per_million_syns=round(srv / (flood["sent"] / 1e6), 3) if flood["sent"] else None)
p.update(probe)
print(json.dumps(p))
PY
  tail -1 "$work/points" >&2
}

limit() { # program: the flood at the generator's maximum against it
  local r0 r1 out
  tb_xdp "$TBX" "$1" 600
  r0=$(rx)
  out=$(ip netns exec "$C" taskset -c "$GEN_CPU" "$FLOOD" --interface "$CI" --dst-mac "$SRV_MAC" \
        --dst 198.18.0.1 --dport 80 --count 50000000 --duration "$SECS")
  sleep 0.3
  r1=$(rx)
  python3 - "$1" "$out" "$r0" "$r1" "$(tb_xdp_stop)" >> "$work/limits" <<'PY'
import json, sys
name, f, r0, r1, own = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
s = f["seconds"]
rate = own["rx"] / s if name == "drop" else (r1 - r0) / s
print(json.dumps(dict(limit=name, offered_pps=round(f["pps"]), rate=round(rate))))
PY
  tail -1 "$work/limits" >&2
}

: > "$work/limits"
for l in $LIMITS; do limit "$l"; done
for sys in $SYSTEMS; do
  echo "==> $sys" >&2
  setup_system "$sys"
  for rate in 0 $RATES $MAX; do point "$sys" "$rate"; done
  teardown_system "$sys"
done

mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
python3 - "$work/points" "bench/results/compare-$stamp" "$work" "$MAX" <<'PY'
import json, sys, collections
points = [json.loads(l) for l in open(sys.argv[1])]
out, work, top = sys.argv[2], sys.argv[3], int(sys.argv[4])
limits = {l["limit"]: l for l in map(json.loads, open(f"{work}/limits"))}
by = collections.defaultdict(list)
for p in points:
    by[p["system"]].append(p)

def knee(ps):
    """The highest paced rate below which every point kept success >= 99.9%
    and connect p99 <= 2x the no-flood p99 or that + 10 ms, whichever is
    more (a lost SYN costs a 1 s retransmit; a sub-ms p99 doubles with
    scheduling noise); None if even the lowest failed. Also whether it is
    the ladder's top (then the knee is at least that)."""
    base = next(p for p in ps if p["rate"] == 0)["connect_p99_ms"]
    paced = sorted((p for p in ps if 0 < p["rate"] < top), key=lambda p: p["rate"])
    best = None
    if base is None:   # no request succeeded without a flood
        return None, False
    for p in paced:
        if p["success"] >= 0.999 and p["connect_p99_ms"] is not None \
                and p["connect_p99_ms"] <= max(2 * base, base + 10):
            best = p["rate"]
        else:
            break
    return best, bool(paced) and best == paced[-1]["rate"]
print(f"\n{'system':<15}{'rate':>11}{'offered/s':>11}{'SYN-ACK/s':>11}{'CPU s/M':>9}{'srv s/M':>9}{'success':>9}{'conn p50':>10}{'conn p99':>10}{'req p99':>10}")
for s, ps in by.items():
    for p in ps:
        f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
        rate = "none" if p["rate"] == 0 else ("max" if p["rate"] >= 1e9 else p["rate"])
        print(f"{s:<15}{rate:>11}{p['offered_pps']:>11}{p['synacks_per_s']:>11}{f(p['cpu_s_per_million_syns'], 2):>9}{f(p['srv_cpu_s_per_million_syns'], 2):>9}"
              f"{p['success'] * 100:>8.2f}%{f(p['connect_p50_ms']):>10}{f(p['connect_p99_ms']):>10}{f(p['request_p99_ms']):>10}")
knees = {s: knee(ps) for s, ps in by.items()}
top_of = {s: t for s, (k, t) in knees.items()}
knees = {s: k for s, (k, t) in knees.items()}
print("\nKnee (highest paced rate with success >= 99.9% and connect p99 <= max(2x, +10 ms) the system's no-flood p99):")
kname = "kernel_sc2" if knees.get("kernel_sc2") else "kernel_sc1"
kk = knees.get(kname)
for s, k in knees.items():
    at_least = "at least " if top_of[s] else ""
    # A kernel knee at the ladder's top is a lower bound: no ratio then.
    ratio = f"  ({at_least}{k / kk:.1f}x the kernel's)" if k and kk and not top_of.get(kname) else ""
    top_note = " (the ladder's top)" if top_of[s] else ""
    print(f"  {s:<15}{'below the lowest rate' if k is None else f'{at_least}{k:,} SYN/s{top_note}'}{ratio}")
if limits:
    print("\nAt the generator's maximum, against the testbed's limits (SYN-ACK/s, or frames taken in for drop):")
    for n, l in limits.items():
        print(f"  limit_{n:<9}{l['rate']:>11,}  (offered {l['offered_pps']:,}/s)")
    for s, ps in by.items():
        m = next((p for p in ps if p["rate"] >= top), None)
        if m:
            fr = "  ".join(f"{m['synacks_per_s'] / limits[n]['rate']:.2f} of {n}" for n in ("bounce", "reflect") if n in limits)
            print(f"  {s:<15}{m['synacks_per_s']:>11,}  {fr}")
json.dump(dict(points=points, knees=knees, limits=limits), open(out + ".json", "w"), indent=1)
# gnuplot data: one block per system, x = offered rate (k SYN/s).
with open(f"{work}/plot.dat", "w") as d:
    for s, ps in by.items():
        k = knees[s]
        d.write(f'"{s} (knee {"-" if k is None else f"{k // 1000}k"})"\n')
        for p in ps:
            d.write(f"{p['offered_pps'] / 1000:.1f} {p['success'] * 100:.3f} {p['connect_p99_ms'] or 'NaN'}\n")
        d.write("\n\n")
print(f"\nJSON: {out}.json")
PY
n=$(echo $SYSTEMS | wc -w)
gnuplot <<GP
set terminal pngcairo size 1200,500 font ",10" noenhanced
set output "bench/results/compare-$stamp.png"
set multiplot layout 1,2 title "Legitimate clients under a spoofed SYN flood (veth testbed, one run; knee: success >= 99.9%, connect p99 <= max(2x, +10 ms) no flood)"
set key bottom left
set xlabel "flood offered (k SYN/s)"
set ylabel "requests succeeded (%)"
set yrange [0:105]
plot for [i=0:$((n - 1))] "$work/plot.dat" index i using 1:2 with linespoints title columnheader(1)
set ylabel "connect p99 (ms, log)"
set logscale y
set yrange [*:*]
set key top left
plot for [i=0:$((n - 1))] "$work/plot.dat" index i using 1:3 with linespoints title columnheader(1)
unset multiplot
GP
echo "PNG: bench/results/compare-$stamp.png"
