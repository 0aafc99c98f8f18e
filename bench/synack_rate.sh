#!/usr/bin/env bash
# SYN -> SYN-ACK rate at the generator's maximum, side by side in one run on
# one testbed with one generator, against the testbed's physical limits:
#   limit_drop     an XDP program dropping every frame (what XDP takes in)
#   limit_pass     an XDP program passing every frame to the kernel: the
#                  kernel's own SYN cookies behind the cost of any XDP
#                  program on this interface (not in the default list)
#   limit_bounce   an XDP program sending every frame back unmodified
#   limit_reflect  an XDP program answering each SYN with a cookie-less
#                  SYN-ACK written in place (the cheapest answer there is)
#   limit_kcookie  the peer's way: an XDP program answering each SYN with the
#                  kernel's own SYN cookie (its raw SYN-cookie helpers, as the
#                  kernel's XDP synproxy does), the MSS option only
#   kernel         the kernel's own SYN cookies (tcp_syncookies=2, a plain
#                  listener)
#   synwall_afxdp, synwall_xdp, synwall_auto
#                  synwall with [datapath] synack = "afxdp", "xdp", "auto"
#   synwall_<mode>_busy
#                  the same with preferred busy polling (busy_poll_us = 50,
#                  the veth's napi_defer_hard_irqs = 2, gro_flush_timeout
#                  = 200 us), not in the default list
#   synwall_<mode>[_noguard|_guard32]_auto
#                  the same with [attack] mode = "auto" (the kernel's until
#                  the detector sees the flood, 200 ms in), not in the
#                  default list
#   synwall_<mode>_noguard, synwall_<mode>_guard32
#                  the reflection guard off ([reflection] synacks_per_prefix
#                  = 0), or keyed per /32 (prefix_v4 = 32: a window per
#                  source) instead of the default /24, not in the default list
#   <system>_bare  any of the above on the bare testbed: the sink is taken
#                  off the client veth for it, as in a container, where the
#                  veth drops every XDP answer (SYSTEMS_BARE="kernel
#                  synwall_auto" adds these two; the default list has them).
#                  A limit_* program runs there in generic XDP, whose answers
#                  take the kernel's transmit path, as synwall's do there:
#                  limit_bounce_bare is what that interface can carry.
# The client veth has the sink (bench/bpf/testbed.bpf.c) for every other
# system: answers to spoofed sources die there, counted, as on a real wire. The
# server side (its veth's NAPI thread, synwall's worker) is on CPU 0, the
# client side (the generator, the client veth's NAPI thread) on CPU 1.
# Run as root:  bash bench/synack_rate.sh   (ROUNDS=3 alternates the systems)
#
# Network rules: two namespaces made here, joined by a veth pair, addresses
# from 198.18.0.0/15 only, no default route; every flood is bounded by count
# and time; the namespaces are deleted on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-4}        # seconds per flood
COUNT=${COUNT:-50000000}       # frames per flood (the duration usually ends it first)
ROUNDS=${ROUNDS:-1}            # rounds over all systems (medians are reported)
SYSTEMS=${SYSTEMS:-"limit_drop limit_bounce limit_reflect limit_kcookie kernel synwall_afxdp synwall_xdp synwall_auto kernel_bare synwall_auto_bare"}
SRV_CPU=${SRV_CPU:-0} CLI_CPU=${CLI_CPU:-1}

[ "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
cargo build --release --locked --quiet --bin synwall --bin synwall-flood --bin synwall-testbed-xdp
SW=$PWD/target/release/synwall FLOOD=$PWD/target/release/synwall-flood
TBX=$PWD/target/release/synwall-testbed-xdp

. bench/testbed.sh
work=$(mktemp -d /tmp/synwall-rate.XXXXXX)
LISTENER= SWPID= XDPPID= SINKPID=
trap 'tb_cleanup $SWPID $LISTENER $XDPPID $SINKPID' EXIT
tb_create "swr$(printf '%05x' $$)" 1
ip netns exec "$S" sysctl -qw net.ipv4.tcp_syncookies=2
ip netns exec "$S" sysctl -qw net.ipv4.tcp_max_syn_backlog=65536
ip netns exec "$C" ping -c1 -W1 198.18.0.1 >/dev/null   # neighbours resolved before timing

# The sink stays on the client veth but for the bare systems.
tb_xdp "$TBX" sink 3600; SINKPID=$XDPPID; XDPPID=
tb_sides "$SRV_CPU" "$CLI_CPU"   # the client veth has NAPI once its XDP program is there
# Answers = frames arriving at the client veth (its rx_packets counts every
# frame its XDP program sees, dropped or passed).
sink_dropped() { ip netns exec "$C" cat "/sys/class/net/$CI/statistics/rx_packets"; }
busy() { awk -v c="cpu$1" '$1 == c || (c == "cpuall" && $1 == "cpu") {print $2+$3+$4+$7+$8}' /proc/stat; }
HZ=$(getconf CLK_TCK)

# The plain listener for the kernel and for synwall's hand-off.
ip netns exec "$S" python3 -c '
import socket,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(("198.18.0.1",80)); s.listen(4096); time.sleep(3600)' &
LISTENER=$!
(umask 077; echo 00112233445566778899aabbccddeeff > "$work/secret")

start_system() { # name
  case $1 in
    limit_*) tb_xdp "$TBX" "${1#limit_}" 600 ${BARE_RUN:+--generic} ;;
    kernel) ;;
    synwall_*)
      local mode=${1#synwall_} busy=0 guard="" attack=""
      case $mode in *_auto) mode=${mode%_auto} attack='[attack]\nmode = "auto"\n' ;; esac
      case $mode in *_busy) mode=${mode%_busy} busy=50 ;; esac
      case $mode in
        *_noguard) mode=${mode%_noguard} guard='[reflection]\nsynacks_per_prefix = 0\n' ;;
        *_guard32) mode=${mode%_guard32} guard='[reflection]\nprefix_v4 = 32\n' ;;
      esac
      ip netns exec "$S" sh -c "echo $((busy ? 2 : 0)) > /sys/class/net/$SI/napi_defer_hard_irqs; \
        echo $((busy ? 200000 : 0)) > /sys/class/net/$SI/gro_flush_timeout"
      printf "[datapath]\ninterface = \"%s\"\nstats_socket = \"%s\"\ncpus = [%s]\nsynack = \"%s\"\nbusy_poll_us = %s\n[cookie]\nsecret_file = \"%s\"\n$guard$attack" \
        "$SI" "$work/stats.sock" "$SRV_CPU" "$mode" "$busy" "$work/secret" > "$work/synwall.toml"
      ip netns exec "$S" "$SW" run --config "$work/synwall.toml" >/dev/null 2>"$work/synwall.log" &
      SWPID=$!
      tb_wait_stats "$SW" "$work/stats.sock" ;;
  esac
}

stop_system() { # name; writes the system's own counters (JSON) to $work/own.json
  case $1 in
    limit_*) tb_xdp_stop > "$work/own.json" ;;
    kernel) echo '{}' > "$work/own.json" ;;
    synwall_*)
      "$SW" stats --socket "$work/stats.sock" > "$work/own.json"
      kill -TERM "$SWPID"; wait "$SWPID" || true; SWPID= ;;
  esac
}

sink_on() { tb_xdp "$TBX" sink 3600; SINKPID=$XDPPID; XDPPID=; }
sink_off() { kill -TERM "$SINKPID" 2>/dev/null; wait "$SINKPID" 2>/dev/null || true; SINKPID=; }
measure() { # name round
  local r0 r1 s0 s1 a0 a1 out own name=$1 BARE_RUN=
  case $1 in *_bare) sink_off; BARE_RUN=1; set -- "${1%_bare}" "$2" ;; esac
  start_system "$1"
  sleep 0.3
  r0=$(sink_dropped); s0=$(busy "$SRV_CPU"); a0=$(busy all)
  out=$(ip netns exec "$C" taskset -c "$CLI_CPU" "$FLOOD" --interface "$CI" --dst-mac "$SRV_MAC" \
        --dst 198.18.0.1 --dport 80 --count "$COUNT" --duration "$DURATION")
  sleep 0.3
  r1=$(sink_dropped); s1=$(busy "$SRV_CPU"); a1=$(busy all)
  stop_system "$1"; own=$(cat "$work/own.json")
  [ -n "$SINKPID" ] || sink_on
  python3 -c '
import json,sys
f=json.loads(sys.argv[1]); ans=int(sys.argv[3])-int(sys.argv[2]); hz=int(sys.argv[8])
srv=(int(sys.argv[5])-int(sys.argv[4]))/hz; cpu=(int(sys.argv[7])-int(sys.argv[6]))/hz
own=json.loads(sys.argv[9]) if sys.argv[9].strip() else {}
print(json.dumps({"system":sys.argv[10],"round":int(sys.argv[11]),"syns_sent":f["sent"],"offered_pps":round(f["pps"]),
  "seconds":f["seconds"],"answers":ans,"answers_per_s":round(ans/f["seconds"]),
  "server_cpu_s_per_million_syns":round(srv/(f["sent"]/1e6),3),
  "server_cpu_s_per_million_answers":round(srv/(ans/1e6),3) if ans > 1000 else None,"all_cpu_s_per_million_syns":round(cpu/(f["sent"]/1e6),3),
  "limit_rx":own.get("rx"),"xdp":own.get("xdp"),"workers":own.get("workers"),"xdp_answers":own.get("xdp_answers")}))
' "$out" "$r0" "$r1" "$s0" "$s1" "$a0" "$a1" "$HZ" "$own" "$name" "$2" | tee -a "$work/results.jsonl" >&2
}

for round in $(seq "$ROUNDS"); do
  for sys in $SYSTEMS; do measure "$sys" "$round"; done
done
kill -TERM "$SINKPID" 2>/dev/null; wait "$SINKPID" 2>/dev/null || true; SINKPID=

mkdir -p bench/results
python3 - "$work/results.jsonl" "$DURATION" <<'PY'
import json, statistics, sys, time
rows = [json.loads(l) for l in open(sys.argv[1])]
systems = list(dict.fromkeys(r["system"] for r in rows))
med = lambda s, k: statistics.median(r[k] for r in rows if r["system"] == s and r[k] is not None)
rate = {s: med(s, "answers_per_s") for s in systems}
if "limit_drop" in systems:
    # the drop program answers nothing: its rate is what it took in
    rate["limit_drop"] = statistics.median(r["limit_rx"] / r["seconds"] for r in rows if r["system"] == "limit_drop")
print(f"\nSYN -> SYN-ACK at the generator's maximum, one veth testbed, {len(rows)} floods of {sys.argv[2]} s "
      f"(medians of {len(rows) // len(systems)} round(s))")
hdr = (f"{'system':<16}{'offered /s':>12}{'answers /s':>12}{'x kernel':>9}{'of bounce':>10}{'of reflect':>11}"
       f"{'srv CPU s/M SYNs':>17}{'all CPU s/M SYNs':>17}{'srv CPU s/M answers':>20}")
print(hdr)
k = rate.get("kernel")
for s in systems:
    a = rate[s]
    cells = [f"{s:<16}", f"{med(s, 'offered_pps'):>12,.0f}", f"{a:>12,.0f}"]
    cells.append(f"{a / k:>9.2f}" if k else f"{'':>9}")
    cells.append(f"{a / rate['limit_bounce']:>10.2f}" if "limit_bounce" in rate else f"{'':>10}")
    cells.append(f"{a / rate['limit_reflect']:>11.2f}" if "limit_reflect" in rate else f"{'':>11}")
    cells.append(f"{med(s, 'server_cpu_s_per_million_syns'):>17.3f}{med(s, 'all_cpu_s_per_million_syns'):>17.3f}")
    per_answer = [r["server_cpu_s_per_million_answers"] for r in rows
                  if r["system"] == s and r["server_cpu_s_per_million_answers"] is not None]
    cells.append(f"{statistics.median(per_answer):>20.3f}" if per_answer and s != "limit_drop" else f"{'':>20}")
    print("".join(cells))
print("(limit_drop: frames taken in, not answered; srv CPU = the server side's CPU only, all CPU includes the generator)")
bare = [s for s in systems if s.endswith("_bare")]
if bare:
    print("(_bare: no program on the client veth, whose answers count as they reach its stack; "
          + "; ".join(f"{s} XDP answers {a['state']}" for s in bare for r in rows
                      if r["system"] == s and (a := r.get("xdp_answers")) and r["round"] == 1) + ")")
out = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "medians": rate, "runs": rows}
name = f"bench/results/synack_rate-{out['time']}.json"
json.dump(out, open(name, "w"), indent=1)
print("JSON:", name)
PY
