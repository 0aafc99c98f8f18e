#!/usr/bin/env bash
# New connections per second without a flood: what synwall costs a busy
# web server's clients in peacetime. One run, the same clients against each
# system in turn, ROUNDS times alternating:
#   direct     nginx alone on port 8080
#   direct_xdp the same, with an XDP program that passes every frame on the
#              server veth (bench/bpf/testbed.bpf.c xdp_pass): what any XDP
#              program costs the kernel's path on a veth, where each frame
#              is made into an XDP buffer and back (the anchor for kernel
#              mode's cost of its own, not in SYSTEMS unless asked for)
#   kernel     synwall in kernel mode protecting port 8080 (the defaults
#              otherwise): the same nginx takes the handed-off connections
#   kernel_xdp the same with synack = "xdp" whatever SYNACK says: every SYN
#              answered in XDP, none by the worker (not in SYSTEMS unless
#              asked for)
#   proxy      synwall in proxy mode on port 80, relaying to that nginx
#   haproxy    HAProxy in `mode tcp` on port 81, relaying to that nginx
#              (the anchor for proxy mode)
#   haproxy_xdp the same, with xdp_pass on the server veth as direct_xdp
#              (not in SYSTEMS unless asked for)
# The client veth has the sink (bench/bpf/testbed.bpf.c, as in every bench
# here: a wire, on which synwall's XDP answers reach the client), or with
# BARE=1 nothing, as in a container, where the veth drops XDP answers and
# synwall moves to generic XDP.
# Clients: ApacheBench, CONC requests at a time, each on a new connection
# (no keep-alive), REQUESTS per point, a 13-byte page. Prints requests per
# second (medians over the rounds), the CPU time the whole machine spent
# per connection (every CPU's busy time in /proc/stat over the point:
# clients, server, softirqs, synwall; median) and each system's ratio to
# its anchors (kernel and kernel_xdp to direct and direct_xdp; proxy to
# haproxy and haproxy_xdp; haproxy_xdp and direct_xdp to theirs); writes
# bench/results/conn_rate-<time>.json.
# synwall runs with the reflection guard off (REFLECT_CAP=0; see below).
# Run as root:  bash bench/conn_rate.sh
#
# Network rules: two namespaces and one veth pair made here, 198.18.0.0/15
# only, no default route, deleted on exit; no flood (every client is ab's,
# bounded by REQUESTS).
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-30000}
CONC=${CONC:-32}
ROUNDS=${ROUNDS:-3}
SYSTEMS=${SYSTEMS:-"direct kernel proxy haproxy"}
SYNACK=${SYNACK:-auto}        # synwall's [datapath] synack
ATTACK=${ATTACK:-always}      # synwall's [attack] mode
# synwall's [reflection] synacks_per_prefix. Every client here is one
# address, so the default cap (10,000 SYN-ACKs a second towards a /24)
# would drop its SYNs past 10,000 a second (drop_reflection_cap), and each
# dropped SYN costs its client a second: off, unless asked for.
REFLECT_CAP=${REFLECT_CAP:-0}
BARE=${BARE:-}                # 1: no sink on the client veth
PROXY_THREADS=${PROXY_THREADS:-0}  # synwall's [handoff] proxy_threads (0: one per CPU)
[ "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v ab >/dev/null || missing+=(apache2-utils)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # Installed for this bench only: their own services stay off.
  systemctl disable --now nginx haproxy >/dev/null 2>&1 || true
fi
cargo build --release --locked --quiet --bin synwall --bin synwall-testbed-xdp
SW=$PWD/target/release/synwall TBX=$PWD/target/release/synwall-testbed-xdp

. bench/testbed.sh
work=$(mktemp -d /tmp/synwall-cps.XXXXXX)
NGINX= HAPROXY= SWPID= XDPPID= SINKPID=
trap 'tb_cleanup $SWPID $HAPROXY $NGINX $XDPPID $SINKPID' EXIT
tb_create "swn$(printf '%05x' $$)"
[ -n "$BARE" ] || { tb_xdp "$TBX" sink 3600; SINKPID=$XDPPID; XDPPID=; }
ulimit -n "$(ulimit -Hn)"
# The proxies' connections to their upstream come from one address to one
# port, thousands a second: what an operator of a proxy sets for that
# (tcp_tw_reuse, a wide port range) is set.
# The server keeps no TIME-WAIT sockets (tcp_max_tw_buckets = 0): ab's
# one client address cycles through its ports, so with them most SYNs
# after the first few points reused a 4-tuple the server still held in TIME-WAIT,
# which synwall passes to the kernel (pass_socket) instead of answering:
# kernel mode measured its pass path, not its handshake. Real clients,
# from many addresses, seldom meet one; every system here runs without.
ip netns exec "$S" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000" \
  net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096 net.ipv4.tcp_max_tw_buckets=0
ip netns exec "$C" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1

mkdir "$work/www"; echo "hello nginx!" > "$work/www/index.html"
cat > "$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work;
  uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 198.18.0.1:8080 backlog=4096 reuseport; root $work/www; }
}
EOF
ip netns exec "$S" nginx -c "$work/nginx.conf" -g 'daemon off;' &
NGINX=$!
cat > "$work/haproxy.cfg" <<EOF
global
  maxconn 8000
defaults
  mode tcp
  timeout connect 3s
  timeout client 30s
  timeout server 30s
listen front
  bind 198.18.0.1:81 backlog 4096
  server nginx 198.18.0.1:8080
EOF

(umask 077; "$SW" gen-secret > "$work/secret")
common="[cookie]\nsecret_file = \"%s\"\n[attack]\nmode = \"$ATTACK\"\n[reflection]\nsynacks_per_prefix = $REFLECT_CAP\n"
printf "[datapath]\ninterface = \"%s\"\nstats_socket = \"%s\"\nsynack = \"$SYNACK\"\n[protect]\nports = [8080]\n$common" \
  "$SI" "$work/stats.sock" "$work/secret" > "$work/kernel.toml"
sed 's/^synack = .*/synack = "xdp"/' "$work/kernel.toml" > "$work/kernel_xdp.toml"
printf "[datapath]\ninterface = \"%s\"\nstats_socket = \"%s\"\nsynack = \"$SYNACK\"\n$common[handoff]\nmode = \"proxy\"\nupstreams = [\"198.18.0.1:8080\"]\nproxy_threads = $PROXY_THREADS\n" \
  "$SI" "$work/stats.sock" "$work/secret" > "$work/proxy.toml"

for _ in $(seq 50); do ip netns exec "$C" ab -q -n 1 http://198.18.0.1:8080/index.html >/dev/null 2>&1 && break; sleep 0.1; done

start() { # system; sets PORT, the port its clients use
  case $1 in
    direct) PORT=8080 ;;
    direct_xdp) tb_xdp "$TBX" pass 3600; PORT=8080 ;;
    kernel|kernel_xdp|proxy)
      ip netns exec "$S" "$SW" run --config "$work/$1.toml" >/dev/null 2>"$work/synwall.$1.log" &
      SWPID=$!
      tb_wait_stats "$SW" "$work/stats.sock"
      if [ "$1" = proxy ]; then PORT=80; else PORT=8080; fi ;;
    haproxy|haproxy_xdp)
      [ "$1" = haproxy ] || tb_xdp "$TBX" pass 3600
      ip netns exec "$S" haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>"$work/haproxy.log" &
      HAPROXY=$!
      for _ in $(seq 50); do ip netns exec "$S" ss -ltn | grep -q ':81 ' && break; sleep 0.1; done
      kill -0 "$HAPROXY" 2>/dev/null || { cat "$work/haproxy.log" >&2; exit 1; }
      PORT=81 ;;
  esac
}
# CPU time every CPU spent busy so far (user, system, interrupts; not idle,
# I/O wait or steal), in clock ticks: what a point costs the machine.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat; }
stop() {
  case $1 in
    kernel|kernel_xdp|proxy) kill -TERM "$SWPID"; wait "$SWPID" || true; SWPID= ;;
    haproxy|haproxy_xdp) kill -TERM "$HAPROXY"; wait "$HAPROXY" || true; HAPROXY=
      [ "$1" = haproxy ] || tb_xdp_stop >/dev/null ;;
    direct_xdp) tb_xdp_stop >/dev/null ;;
  esac
}

: > "$work/points"
for round in $(seq "$ROUNDS"); do
  for sys in $SYSTEMS; do
    start "$sys"
    busy0=$(busy_ticks)
    out=$(ip netns exec "$C" ab -q -r -n "$REQUESTS" -c "$CONC" "http://198.18.0.1:$PORT/index.html" 2>&1)
    busy1=$(busy_ticks)
    stop "$sys"
    python3 - "$sys" "$round" "$out" "$((busy1 - busy0))" "$(getconf CLK_TCK)" >> "$work/points" <<'PY'
import json, re, sys
name, rnd, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
grab = lambda pat, d=None: (lambda m: float(m.group(1)) if m else d)(re.search(pat, out))
done = grab(r"Complete requests:\s+(\d+)", 0)
cpu_us = int(sys.argv[4]) * 1e6 / int(sys.argv[5]) / done if done else None
print(json.dumps(dict(system=name, round=rnd, rps=grab(r"Requests per second:\s+([\d.]+)", 0.0), cpu_us=cpu_us,
                      complete=grab(r"Complete requests:\s+(\d+)", 0), failed=grab(r"Failed requests:\s+(\d+)", 0),
                      non_2xx=grab(r"Non-2xx responses:\s+(\d+)", 0))))
PY
    tail -1 "$work/points" >&2
    sleep 1   # the last point's connections finish closing
  done
done

mkdir -p bench/results
python3 - "$work/points" "bench/results/conn_rate-$(date -u +%Y%m%dT%H%M%SZ).json" "$REQUESTS" "$CONC" \
  "${BARE:+bare testbed (no sink), }synack = $SYNACK, attack mode = $ATTACK, synacks_per_prefix = $REFLECT_CAP, proxy_threads = $PROXY_THREADS" <<'PY'
import json, statistics, sys
points = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for p in points:
    by.setdefault(p["system"], []).append(p)
med = {s: statistics.median(p["rps"] for p in ps) for s, ps in by.items()}
print(f"\nNew connections per second, ab -c {sys.argv[4]}, {sys.argv[3]} requests a point, medians of {max(len(v) for v in by.values())} rounds, "
      f"{sys.argv[5]}")
width = max(6 * len(ps) for ps in by.values())
cpu = {s: statistics.median(v) if (v := [p["cpu_us"] for p in ps if p.get("cpu_us") is not None]) else float("nan")
       for s, ps in by.items()}
print(f"{'system':<12}{'req/s':>10}  {'rounds':<{width}}{'failed':>6}  {'CPU-µs/conn':>11}  ratio")
anchor = {"kernel": "direct", "kernel_xdp": "direct", "proxy": "haproxy", "haproxy": "direct", "direct_xdp": "direct",
          "haproxy_xdp": "haproxy"}
for s, ps in by.items():
    ratio = ", ".join(f"{med[s] / med[a]:.2f}x {a}" for a in (anchor.get(s), {"proxy": "haproxy_xdp", "kernel": "direct_xdp", "kernel_xdp": "direct_xdp"}.get(s))
                      if a and a in med and med[a])
    rounds = " ".join(f"{p['rps']:.0f}" for p in ps)
    failed = sum(int(p["failed"] + p["non_2xx"]) + (0 if p["complete"] else 1) for p in ps)
    print(f"{s:<12}{med[s]:>10.0f}  {rounds:<{width}}{failed:>6}  {cpu[s]:>11.1f}  {ratio}")
json.dump(dict(points=points, medians=med, settings=sys.argv[5]), open(sys.argv[2], "w"), indent=1)
print(f"JSON: {sys.argv[2]}")
PY
