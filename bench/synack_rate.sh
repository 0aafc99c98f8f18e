#!/usr/bin/env bash
# SYN -> SYN-ACK rate, side by side in one run on one testbed with one
# generator: (1) the kernel's own SYN cookies (tcp_syncookies=2, a plain
# listener), (2) synwall. Run as root:  bash bench/synack_rate.sh
#
# Network rules: two namespaces made here, joined by a veth pair, addresses
# from 198.18.0.0/15 only, no default route; every flood is bounded by count
# and time; the namespaces are deleted on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}        # seconds per flood
COUNT=${COUNT:-50000000}       # frames per flood (the duration usually ends it first)
QUEUES=${QUEUES:-1}            # veth queues (= synwall workers)

[ "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
cargo build --release --locked --quiet --bin synwall --bin synwall-flood
SW=$PWD/target/release/synwall FLOOD=$PWD/target/release/synwall-flood

. bench/testbed.sh
work=$(mktemp -d /tmp/synwall-rate.XXXXXX)
LISTENER= SWPID=
cleanup() {
  [ -n "$SWPID" ] && kill "$SWPID" 2>/dev/null || true
  [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null || true
  tb_destroy
  rm -rf "$work"
}
trap cleanup EXIT
tb_create "swr$(printf '%05x' $$)" "$QUEUES"
ip netns exec "$S" sysctl -qw net.ipv4.tcp_syncookies=2
ip netns exec "$S" sysctl -qw net.ipv4.tcp_max_syn_backlog=65536
ip netns exec "$C" ping -c1 -W1 198.18.0.1 >/dev/null   # neighbours resolved before timing

rx()   { ip netns exec "$C" cat "/sys/class/net/$CI/statistics/rx_packets"; }
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }   # jiffies, all CPUs
HZ=$(getconf CLK_TCK)

declare -A RESULT
measure() { # name
  local r0 b0 r1 b1 out
  r0=$(rx); b0=$(busy)
  out=$(ip netns exec "$C" "$FLOOD" --interface "$CI" --dst-mac "$SRV_MAC" --dst 198.18.0.1 --dport 80 \
        --count "$COUNT" --duration "$DURATION")
  sleep 0.3
  r1=$(rx); b1=$(busy)
  RESULT[$1]=$(python3 -c '
import json,sys
f=json.loads(sys.argv[1]); synacks=int(sys.argv[3])-int(sys.argv[2]); cpu=(int(sys.argv[5])-int(sys.argv[4]))/int(sys.argv[6])
print(json.dumps({"syns_sent":f["sent"],"flood_pps":round(f["pps"]),"seconds":f["seconds"],"synacks":synacks,
  "synacks_per_s":round(synacks/f["seconds"]),"cpu_s_all":round(cpu,2),"cpu_s_per_million_syns":round(cpu/(f["sent"]/1e6),3)}))
' "$out" "$r0" "$r1" "$b0" "$b1" "$HZ")
  echo "$1: ${RESULT[$1]}" >&2
}

# (1) The kernel alone: a plain listener, SYN cookies always on.
ip netns exec "$S" python3 -c '
import socket,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(("198.18.0.1",80)); s.listen(4096); time.sleep(3600)' &
LISTENER=$!
sleep 0.5
measure kernel_syncookies

# (2) synwall in front of the same listener.
echo 00112233445566778899aabbccddeeff > "$work/secret"
cat > "$work/synwall.toml" <<T
[datapath]
interface = "$SI"
stats_socket = "$work/stats.sock"
[cookie]
secret_file = "$work/secret"
T
ip netns exec "$S" "$SW" run --config "$work/synwall.toml" >"$work/final.json" 2>"$work/synwall.log" &
SWPID=$!
tb_wait_stats "$SW" "$work/stats.sock"
measure synwall
"$SW" stats --socket "$work/stats.sock" > "$work/stats.json"
kill -TERM "$SWPID"; wait "$SWPID"; SWPID=

mkdir -p bench/results
python3 - "${RESULT[kernel_syncookies]}" "${RESULT[synwall]}" "$work/stats.json" "$QUEUES" <<'PY'
import json, sys, time
k, s = json.loads(sys.argv[1]), json.loads(sys.argv[2])
stats = json.load(open(sys.argv[3]))
workers = sum(w["synacks"] for w in stats["workers"])
print(f"\nSYN -> SYN-ACK on a veth testbed ({sys.argv[4]} queue(s)), one generator, one run")
print(f"{'':28}{'kernel syncookies':>20}{'synwall':>14}")
for key, label in [("flood_pps", "SYNs offered /s"), ("synacks_per_s", "SYN-ACKs /s"),
                   ("cpu_s_per_million_syns", "CPU s / M SYNs (all CPUs)")]:
    print(f"{label:<28}{k[key]:>20}{s[key]:>14}")
ratio = s["synacks_per_s"] / max(k["synacks_per_s"], 1)
print(f"synwall / kernel SYN-ACK rate: {ratio:.2f}x   (synwall workers counted {workers} SYN-ACKs)")
out = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "queues": int(sys.argv[4]),
       "kernel_syncookies": k, "synwall": s, "ratio_synacks": round(ratio, 2), "synwall_stats": stats}
name = f"bench/results/synack_rate-{out['time']}.json"
json.dump(out, open(name, "w"), indent=1)
print("JSON:", name)
PY
