#!/usr/bin/env bash
# Soak: synwall (kernel-mode hand-off, an unmodified http.server behind it)
# under a steady spoofed SYN flood for SOAK_SECS, with legitimate clients
# (bench/prober.py) probing throughout, the cookie key rotating every 10 s
# ([cookie] rotation_secs = 10) and a reload every RELOAD_SECS that changes
# the deny list. First the same clients for BASE_SECS without a flood, the
# baseline. Every SAMPLE_SECS: synwall's RSS, the occupancy of each of its
# BPF hash maps (bpftool), and whether each worker made progress.
#
# Passes when: no legitimate request failed, connect p99 is within
# P99_MAX_RATIO (2) times the
# baseline's, RSS and map occupancy are flat (the last sample within 10 %
# + 2 MiB, or + 64 entries, of the first after warm-up), no worker stalled
# in any interval, every reload applied, and synwall still runs. Prints a
# summary; writes bench/results/soak-<time>.json and .png (gnuplot).
#
#   bash bench/soak.sh                          # 10 minutes at 80 % of KNEE
#   bash bench/soak.sh --short   # the test command's: 40 s at 100k SYN/s,
#                                # its debug build, p99 within 4x (a smoke
#                                # test of the mechanics on a machine still
#                                # warm from the build; 2x is the long run's)
#
# KNEE (default 1,000,000 SYN/s) is where synwall's answer rate stops
# following the offered rate on this testbed (bench/synack_rate.sh's
# synwall median, 1.05M/s on the 2-core test machine); RATE defaults to
# 80 % of it.
#
# Network rules: namespaces and a veth pair made here (bench/testbed.sh),
# addresses from 198.18.0.0/15 only, no default route; the flood is bounded
# by count and time; everything is deleted on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --short ]; then
  : "${SOAK_SECS:=40}" "${BASE_SECS:=10}" "${SAMPLE_SECS:=5}" "${RELOAD_SECS:=15}"
  : "${RATE:=100000}" "${PROFILE:=debug}" "${P99_MAX_RATIO:=4}"
fi
SOAK_SECS=${SOAK_SECS:-600}
BASE_SECS=${BASE_SECS:-20}
SAMPLE_SECS=${SAMPLE_SECS:-10}
RELOAD_SECS=${RELOAD_SECS:-60}
KNEE=${KNEE:-1000000}
RATE=${RATE:-$((KNEE * 8 / 10))}
CLIENTS=${CLIENTS:-4}
FLOOD_CPU=${FLOOD_CPU:-$(( $(nproc) - 1 ))}
SYNACK=${SYNACK:-auto}        # who answers SYNs ([datapath] synack)
PROFILE=${PROFILE:-release}   # the test command's short run uses its debug build
P99_MAX_RATIO=${P99_MAX_RATIO:-2}  # connect p99 under the flood / without it

[ "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
command -v gnuplot >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
if [ "$PROFILE" = release ]; then
  cargo build --release --locked --quiet --bin synwall --bin synwall-flood --bin synwall-testbed-xdp
fi
bin=$PWD/target/$PROFILE
SW=$bin/synwall FLOOD=$bin/synwall-flood TBX=$bin/synwall-testbed-xdp

. bench/testbed.sh
work=$(mktemp -d /tmp/synwall-soak.XXXXXX)
HTTP= SWPID= FLOODPID= XDPPID= PROBEPID=
trap 'tb_cleanup $FLOODPID $PROBEPID $SWPID $HTTP $XDPPID' EXIT
tb_create "swk$(printf '%05x' $$)"
tb_xdp "$TBX" sink $((SOAK_SECS + BASE_SECS + 120))
tb_sides 0 "$FLOOD_CPU"
mkdir "$work/www"; echo "hello from behind synwall" > "$work/www/index.html"
tb_http_server "$work/www" "$work"

(umask 077; "$SW" gen-secret > "$work/secret")
config() { # $1: the deny list's body
  printf '[datapath]\ninterface = "%s"\nsynack = "'"$SYNACK"'"\nring_size = '"${RING:-2048}"'\nstats_socket = "%s"\n[cookie]\nsecret_file = "%s"\nrotation_secs = 10\n[protect]\ndeny = [%s]\n' \
    "$SI" "$work/stats.sock" "$work/secret" "$1" > "$work/synwall.toml"
}
config ""
ip netns exec "$S" "$SW" run --config "$work/synwall.toml" > /dev/null 2> "$work/synwall.log" &
SWPID=$!
tb_wait_stats "$SW" "$work/stats.sock"
stats() { "$SW" stats --socket "$work/stats.sock"; }

echo "==> baseline: $CLIENTS clients for ${BASE_SECS}s, no flood"
ip netns exec "$C" python3 bench/prober.py 198.18.0.1 80 "$CLIENTS" "$BASE_SECS" > "$work/base.json"

# The ids of synwall's BPF hash maps (its XDP program's maps).
prog=$(ip netns exec "$S" bpftool -j net show dev "$SI" | python3 -c '
import json, sys
for d in json.load(sys.stdin):
    for x in d.get("xdp", []):
        print(x["id"])' | head -1)
maps=$(bpftool -j prog show id "$prog" | python3 -c 'import json,sys; print(" ".join(map(str, json.load(sys.stdin)["map_ids"])))')
hash_maps=$(for m in $maps; do bpftool -j map show id "$m"; echo; done | python3 -c '
import json, sys
for line in sys.stdin:
    if line.strip():
        m = json.loads(line)
        if "hash" in m["type"]:
            print(str(m["id"]) + ":" + m["name"])')

sample() { # one JSON line: time, RSS, map occupancy, worker progress
  local t=$1 rss occ
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$SWPID/status")
  # Entries per map.
  occ=$(for m in $hash_maps; do
          bpftool -j map dump id "${m%%:*}" | python3 -c '
import json, sys
print(sys.argv[1], len(json.load(sys.stdin)))' "${m#*:}"
        done | python3 -c 'import json,sys; print(json.dumps(dict((k, int(v)) for k, v in (l.split() for l in sys.stdin))))')
  stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
t, rss, occ = float(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
loops = [w["rx"] + w["rx_empty_polls"] for w in s["workers"]]
print(json.dumps({"t": t, "rss_kib": rss, "maps": occ, "worker_loops": loops,
                  "syn_redirect": s["xdp"]["syn_redirect"], "synack_xdp": s["xdp"]["synack_xdp"],
                  "handoff_ok": s["xdp"]["handoff_ok"], "reloads_ok": s["reloads_ok"],
                  "reloads_failed": s["reloads_failed"], "epoch": s.get("epoch")}))' "$t" "$rss" "$occ"
}

echo "==> soak: ${RATE} SYN/s for ${SOAK_SECS}s, $CLIENTS clients, key rotation every 10 s, a reload every ${RELOAD_SECS}s"
ip netns exec "$C" nice -n 19 taskset -c "$FLOOD_CPU" "$FLOOD" --engine afxdp --burst 64 --interface "$CI" --dst-mac "$SRV_MAC" \
  --dst 198.18.0.1 --dport 80 --rate "$RATE" --count $((RATE * SOAK_SECS)) --duration "$SOAK_SECS" > "$work/flood.json" &
FLOODPID=$!
sleep 1
ip netns exec "$C" python3 bench/prober.py 198.18.0.1 80 "$CLIENTS" $((SOAK_SECS - 2)) > "$work/soak.json" &
PROBEPID=$!
start=$(date +%s) reloads=0
: > "$work/samples"
next_sample=0 next_reload=$RELOAD_SECS
while :; do
  now=$(( $(date +%s) - start ))
  [ "$now" -ge "$SOAK_SECS" ] && break
  if [ "$now" -ge "$next_sample" ]; then sample "$now" >> "$work/samples"; next_sample=$((next_sample + SAMPLE_SECS)); fi
  if [ "$now" -ge "$next_reload" ]; then
    reloads=$((reloads + 1))
    if [ $((reloads % 2)) = 1 ]; then config '"2001:2:ffff::/48"'; else config ""; fi
    "$SW" reload --socket "$work/stats.sock" > /dev/null
    next_reload=$((next_reload + RELOAD_SECS))
  fi
  sleep 0.5
done
sample "$SOAK_SECS" >> "$work/samples"
wait "$PROBEPID"; PROBEPID=
wait "$FLOODPID" || true; FLOODPID=
running=1; kill -0 "$SWPID" 2>/dev/null || running=0

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
rc=0
python3 - "$work" "$reloads" "$running" "$RATE" "$SOAK_SECS" "bench/results/soak-$stamp" "$P99_MAX_RATIO" <<'PY' || rc=$?
import json, sys
work, reloads, running, rate, secs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
ratio = float(sys.argv[7])
base = json.load(open(f"{work}/base.json"))
soak = json.load(open(f"{work}/soak.json"))
flood = json.load(open(f"{work}/flood.json"))
samples = [json.loads(l) for l in open(f"{work}/samples") if l.strip()]
warm = samples[1] if len(samples) > 2 else samples[0]
last = samples[-1]
stalls = sum(1 for a, b in zip(samples, samples[1:]) for x, y in zip(a["worker_loops"], b["worker_loops"]) if y <= x)
checks = {
    "no legitimate failure": soak["attempts"] > 0 and soak["ok"] == soak["attempts"],
    f"connect p99 within {ratio:g}x the baseline": soak["connect_p99_ms"] <= ratio * base["connect_p99_ms"],
    "RSS flat": last["rss_kib"] <= warm["rss_kib"] * 1.1 + 2048,
    "map occupancy flat": all(last["maps"][k] <= warm["maps"].get(k, 0) * 1.1 + 64
                              for k in last["maps"]),
    "no worker stall": stalls == 0,
    "every reload applied": last["reloads_ok"] == reloads and last["reloads_failed"] == 0,
    "the key rotated every 10 s": last["epoch"] - samples[0]["epoch"] >= secs // 10 - 1,
    "synwall still runs": running,
}
print(f"\nsoak: {flood['sent']} SYNs at {flood['pps']:.0f}/s (offered {rate}/s) for {secs} s")
print(f"  clients: {soak['ok']}/{soak['attempts']} requests served; connect p50 {soak['connect_p50_ms']:.2f} ms, "
      f"p99 {soak['connect_p99_ms']:.2f} ms (baseline without the flood: p50 {base['connect_p50_ms']:.2f}, "
      f"p99 {base['connect_p99_ms']:.2f} ms)")
print(f"  answered: {last['syn_redirect']} SYNs to the workers, {last['synack_xdp']} SYN-ACKs from XDP; "
      f"{last['handoff_ok']} connections handed off; {last['reloads_ok']} reloads; "
      f"key epochs {samples[0]['epoch']} -> {last['epoch']}")
print(f"  RSS {warm['rss_kib']} KiB at {warm['t']:.0f} s -> {last['rss_kib']} KiB at {last['t']:.0f} s; "
      f"maps {warm['maps']} -> {last['maps']}; {stalls} stalled worker intervals")
for name, ok in checks.items():
    print(f"  {'ok  ' if ok else 'FAIL'} {name}")
json.dump({"rate": rate, "secs": secs, "flood": flood, "baseline": base, "soak": soak,
           "samples": samples, "checks": checks}, open(f"{out}.json", "w"), indent=1)
with open(f"{work}/plot.dat", "w") as f:
    names = sorted(last["maps"])
    f.write("# t rss_mib " + " ".join(names) + "\n")
    for s in samples:
        f.write(f"{s['t']} {s['rss_kib'] / 1024:.2f} " + " ".join(str(s["maps"].get(n, 0)) for n in names) + "\n")
open(f"{work}/names", "w").write(" ".join(sorted(last["maps"])))
sys.exit(0 if all(checks.values()) else 1)
PY
names=$(cat "$work/names")
{
  echo 'set terminal pngcairo size 1000,450 font ",10" noenhanced'
  echo "set output \"bench/results/soak-$stamp.png\""
  echo "set title \"synwall soak: ${RATE} SYN/s offered, ${SOAK_SECS} s\""
  echo 'set xlabel "seconds"; set ylabel "RSS (MiB)"; set y2label "map entries"; set y2tics; set ytics nomirror'
  echo 'set key outside right; set yrange [0:*]; set y2range [0:*]'
  printf 'plot "%s" using 1:2 with linespoints title "RSS (MiB)" axes x1y1' "$work/plot.dat"
  i=3; for n in $names; do printf ', "%s" using 1:%d with linespoints title "%s" axes x1y2' "$work/plot.dat" "$i" "$n"; i=$((i + 1)); done
  echo
} | gnuplot
echo "results: bench/results/soak-$stamp.json, bench/results/soak-$stamp.png"
exit $rc
