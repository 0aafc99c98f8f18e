#!/usr/bin/env bash
# Request latency and bulk throughput, no flood: directly to the server and
# through synwall's kernel-mode hand-off, alternating twice in one run.
# Run as root:  bash bench/handoff_latency.sh
# (Proxy mode joins this table once it exists.)
#
# Network rules: namespaces and a veth pair made here, 198.18.0.0/15 only,
# no default route, deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-500}     # sequential requests per round
BULK_MB=${BULK_MB:-256}       # size of each bulk download
[ "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
cargo build --release --locked --quiet --bin synwall
SW=$PWD/target/release/synwall

. bench/testbed.sh
work=$(mktemp -d /tmp/synwall-lat.XXXXXX)
HTTP= SWPID=
cleanup() {
  for p in $SWPID $HTTP; do kill "$p" 2>/dev/null || true; done
  tb_destroy
  rm -rf "$work"
}
trap cleanup EXIT
tb_create "swl$(printf '%05x' $$)"

mkdir "$work/www"; echo "hello" > "$work/www/index.html"
head -c $((BULK_MB << 20)) /dev/zero > "$work/www/bulk.bin"
tb_http_server "$work/www" "$work"

"$SW" gen-secret > "$work/secret"
printf '[datapath]\ninterface = "%s"\nstats_socket = "%s"\n[cookie]\nsecret_file = "%s"\n' \
  "$SI" "$work/stats.sock" "$work/secret" > "$work/synwall.toml"

round() { # name: REQUESTS sequential requests, then 3 bulk downloads
  for _ in $(seq "$REQUESTS"); do
    ip netns exec "$C" curl -s -o /dev/null -w '%{time_connect} %{time_total}\n' http://198.18.0.1/index.html
  done >> "$work/lat.$1"
  for _ in 1 2 3; do
    ip netns exec "$C" curl -s -o /dev/null -w '%{speed_download}\n' http://198.18.0.1/bulk.bin
  done >> "$work/bulk.$1"
}
synwall_on() {
  ip netns exec "$S" "$SW" run --config "$work/synwall.toml" >/dev/null 2>"$work/synwall.log" &
  SWPID=$!
  tb_wait_stats "$SW" "$work/stats.sock"
}
synwall_off() { kill -TERM "$SWPID"; wait "$SWPID"; SWPID=; }

for i in 1 2; do
  echo "==> round $i: direct" >&2; round direct
  echo "==> round $i: synwall kernel mode" >&2; synwall_on; round kernel; synwall_off
done

python3 - "$work" <<'PY'
import statistics as st, sys
w = sys.argv[1]
def lat(name):
    rows = [tuple(map(float, l.split())) for l in open(f"{w}/lat.{name}")]
    c = sorted(r[0] * 1000 for r in rows); t = sorted(r[1] * 1000 for r in rows)
    p = lambda v, q: v[min(len(v) - 1, int(q * len(v)))]
    return len(rows), p(c, .5), p(c, .99), p(t, .5), p(t, .99)
def bulk(name):
    return st.median(float(l) for l in open(f"{w}/bulk.{name}")) * 8 / 1e9
print(f"\n{'':22}{'requests':>9}{'connect p50':>13}{'p99':>9}{'request p50':>13}{'p99':>9}{'bulk Gbit/s':>13}")
res = {}
for name, label in [("direct", "direct"), ("kernel", "synwall kernel mode")]:
    n, c50, c99, t50, t99 = lat(name); g = bulk(name); res[name] = (t50, t99, g)
    print(f"{label:<22}{n:>9}{c50:>10.3f} ms{c99:>6.3f} ms{t50:>10.3f} ms{t99:>6.3f} ms{g:>13.2f}")
d, k = res["direct"], res["kernel"]
print(f"kernel mode / direct: request p50 {k[0]/d[0]:.3f}x, p99 {k[1]/d[1]:.3f}x, bulk {k[2]/d[2]:.3f}x")
PY
