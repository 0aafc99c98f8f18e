# Shared test network for the bench scripts (source it; needs root).
#
# Network rules: two namespaces made here, <prefix>-srv and <prefix>-cli,
# joined by one veth pair; addresses from 198.18.0.0/15 only; no default
# route; the rest of 198.18.0.0/15 routed from the server via the client, so
# spoofed flood sources resolve to one neighbour. tb_destroy deletes both
# namespaces: call it from the caller's EXIT trap.
#
#   tb_create PREFIX [QUEUES]   sets S C SI CI SRV_MAC
#   tb_http_server DIR WORK [PORT]
#                               python http.server on PORT (80) of every
#                               IPv4 address, backlog 4096, no request
#                               logging; sets HTTP
#   tb_wait_stats SYNWALL SOCK  waits until `synwall stats` answers
#   tb_sides SERVER_CPU CLIENT_CPU
#                               pins each side's receive work, at softirq-like
#                               real-time priority: the server
#                               veth's NAPI thread to SERVER_CPU, the client
#                               veth's (threaded too; it has NAPI once an
#                               XDP program is attached) to CLIENT_CPU
#   tb_xdp TESTBED_XDP PROGRAM SECONDS
#                               starts synwall-testbed-xdp PROGRAM (sink on
#                               the client veth; drop, bounce, reflect on
#                               the server veth), waits until it is
#                               attached; sets XDPPID, its output in $work/xdp.out
#   tb_xdp_stop                 detaches it; prints its counters (JSON)
#   tb_destroy
#   tb_cleanup PID...           for the caller's EXIT trap: kills each PID
#                               (empty ones skipped), tb_destroy, removes $work

tb_create() {
  local q=${2:-1}
  S=$1-srv C=$1-cli SI=${1}s CI=${1}c
  ip netns add "$S"; ip netns add "$C"
  ip link add "$SI" numrxqueues "$q" numtxqueues "$q" netns "$S" type veth \
     peer name "$CI" numrxqueues "$q" numtxqueues "$q" netns "$C"
  ip -n "$S" addr add 198.18.0.1/24 dev "$SI"; ip -n "$C" addr add 198.18.0.2/24 dev "$CI"
  ip -n "$S" link set "$SI" up; ip -n "$C" link set "$CI" up
  ip -n "$S" link set lo up; ip -n "$C" link set lo up
  ip -n "$S" route add 198.18.0.0/15 via 198.18.0.2
  # The client's checksum offload stays on, as on every veth: its
  # segments carry partial checksums (CHECKSUM_PARTIAL), which synwall
  # takes as the kernel does.
  # The server veth receives like a NIC: through NAPI (GRO on, which also
  # lets the live-frames generator's XDP_TX reach it without an XDP
  # program there), in its own kernel thread, so the server's receive work
  # runs on the server's side and not in the generator's context.
  ip netns exec "$S" ethtool -K "$SI" gro on >/dev/null
  # The clients' segments meet the flood where a NIC's would, in that NAPI
  # ring: a veth hands the skbs of a TSO-capable sender to netif_rx, a
  # per-CPU queue the flood's frames never fill, so with TSO on a flood
  # that overflows the ring never costs a client's SYN.
  ip netns exec "$C" ethtool -K "$CI" tso off >/dev/null
  ip netns exec "$S" sh -c "echo 1 > /sys/class/net/$SI/threaded"
  SRV_MAC=$(ip -n "$S" -o link show "$SI" | sed -E 's#.*link/ether ([0-9a-f:]+).*#\1#')
}

tb_http_server() {
  # python's http.server, with a listen backlog an operator would configure
  # (socketserver's default of 5 overflows with a few parallel clients) and
  # without per-request logging.
  cat > "$2/server.py" <<'PYSRV'
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 4096
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
Server(("", int(sys.argv[2])), functools.partial(Quiet, directory=sys.argv[1])).serve_forever()
PYSRV
  local port=${3:-80} _
  ip netns exec "$S" python3 "$2/server.py" "$1" "$port" >/dev/null 2>&1 &
  HTTP=$!
  for _ in $(seq 50); do ip netns exec "$S" ss -Hltn "sport = :$port" | grep -q . && return 0; sleep 0.1; done
  echo "http server did not start" >&2; return 1
}

tb_sides() {
  ip netns exec "$C" sh -c "echo 1 > /sys/class/net/$CI/threaded"
  local p
  # A NIC's receive work runs in softirq, ahead of every process on its
  # CPU; a NAPI thread is an ordinary one unless it is given that priority.
  for p in $(pgrep "^napi/$SI-"); do taskset -pc "$1" "$p" >/dev/null; chrt -f -p 50 "$p"; done
  for p in $(pgrep "^napi/$CI-"); do taskset -pc "$2" "$p" >/dev/null; chrt -f -p 50 "$p"; done
}

tb_xdp() {
  local ns=$S dev=$SI _
  [ "$2" = sink ] && ns=$C dev=$CI
  : > "$work/xdp.out"
  ip netns exec "$ns" "$1" --interface "$dev" --program "$2" --seconds "$3" "${@:4}" > "$work/xdp.out" &
  XDPPID=$!
  for _ in $(seq 100); do grep -q attached "$work/xdp.out" && return 0; sleep 0.05; done
  echo "synwall-testbed-xdp $2 did not attach" >&2; return 1
}

tb_xdp_stop() {
  local _
  kill -TERM "$XDPPID" 2>/dev/null || true
  # Its counters are its second line (wait alone would not do from a subshell).
  for _ in $(seq 100); do [ "$(wc -l < "$work/xdp.out")" -ge 2 ] && break; sleep 0.05; done
  wait "$XDPPID" 2>/dev/null || true
  XDPPID=
  tail -n 1 "$work/xdp.out"
}

tb_wait_stats() {
  local _
  for _ in $(seq 100); do "$1" stats --socket "$2" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "synwall did not come up" >&2; return 1
}

tb_destroy() {
  [ -n "${S:-}" ] && ip netns del "$S" 2>/dev/null
  [ -n "${C:-}" ] && ip netns del "$C" 2>/dev/null
  return 0
}

tb_cleanup() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  tb_destroy
  rm -rf "$work"
}
