#!/usr/bin/env bash
# Request latency and bulk throughput, no flood, in one run: directly to
# the server, through synwall's kernel-mode hand-off, and through proxy
# mode with each hand-off engine (kfunc, repair), rotating between the
# four ROUNDS times.
# Run as root:  bash bench/handoff_latency.sh
#
# One python http.server listens on port 8080 of the server namespace.
#   direct:      client -> 198.18.0.1:8080, no synwall
#   kernel mode: synwall protects 8080 and hands connections to that server
#   proxy mode:  synwall protects 80 and relays to upstream 198.18.0.1:8080,
#                its sockets made by the kfunc (proxy) or by TCP_REPAIR (repair)
# Writes a table and bench/results/handoff_latency-<time>.json.
#
# Network rules: namespaces and a veth pair made here, 198.18.0.0/15 only,
# no default route, deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-500}     # sequential requests per round
SYNACK=${SYNACK:-auto}        # [datapath] synack (xdp needs an XDP program on the client veth)
BULK_MB=${BULK_MB:-256}       # size of each bulk download
ROUNDS=${ROUNDS:-2}
[ "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
cargo build --release --locked --quiet --bin synwall
SW=$PWD/target/release/synwall

. bench/testbed.sh
work=$(mktemp -d /tmp/synwall-lat.XXXXXX)
HTTP= SWPID=
trap 'tb_cleanup $SWPID $HTTP' EXIT
tb_create "swl$(printf '%05x' $$)"

mkdir "$work/www"; echo "hello" > "$work/www/index.html"
head -c $((BULK_MB << 20)) /dev/zero > "$work/www/bulk.bin"
tb_http_server "$work/www" "$work" 8080

(umask 077; "$SW" gen-secret > "$work/secret")
conf() { # name, mode, engine, protected port
  printf '[datapath]\ninterface = "%s"\nstats_socket = "%s"\nsynack = "%s"\n[protect]\nports = [%s]\n[cookie]\nsecret_file = "%s"\n[handoff]\nmode = "%s"\nengine = "%s"\nupstreams = ["198.18.0.1:8080"]\npipe_size = %s\n' \
    "$SI" "$work/stats.sock" "${SYNACK:-auto}" "$4" "$work/secret" "$2" "$3" "${PIPE_SIZE:-1048576}" > "$work/$1.toml"
}
conf kernel kernel kfunc 8080; conf proxy proxy kfunc 80; conf repair proxy repair 80

PROBE_SECS=${PROBE_SECS:-5}   # then 16 clients back to back for this long
round() { # name port: REQUESTS sequential requests, 3 bulk downloads, then
          # 16 concurrent clients back to back (their ports come round again)
  for _ in $(seq "$REQUESTS"); do
    ip netns exec "$C" curl -s -o /dev/null -w '%{time_connect} %{time_total}\n' "http://198.18.0.1:$2/index.html"
  done >> "$work/lat.$1"
  for _ in 1 2 3; do
    ip netns exec "$C" curl -s -o /dev/null -w '%{speed_download}\n' "http://198.18.0.1:$2/bulk.bin"
  done >> "$work/bulk.$1"
  ip netns exec "$C" python3 bench/prober.py 198.18.0.1 "$2" 16 "$PROBE_SECS" >> "$work/probe.$1"
}
synwall_on() {
  ip netns exec "$S" "$SW" run --config "$work/$1.toml" >/dev/null 2>"$work/synwall.log" &
  SWPID=$!
  tb_wait_stats "$SW" "$work/stats.sock"
}
synwall_off() { kill -TERM "$SWPID"; wait "$SWPID"; SWPID=; }

for i in $(seq "$ROUNDS"); do
  echo "==> round $i: direct" >&2; round direct 8080
  echo "==> round $i: synwall kernel mode" >&2; synwall_on kernel; round kernel 8080; synwall_off
  echo "==> round $i: synwall proxy mode" >&2; synwall_on proxy; round proxy 80; synwall_off
  echo "==> round $i: synwall proxy mode, repair engine" >&2; synwall_on repair; round repair 80; synwall_off
done

mkdir -p bench/results
python3 - "$work" "bench/results/handoff_latency-$(date +%Y%m%dT%H%M%S).json" "$PROBE_SECS" <<'PY'
import json, statistics as st, sys
w, out = sys.argv[1], sys.argv[2]
def pct(v, q):
    return v[min(len(v) - 1, int(q * len(v)))]
res = {}
print(f"\n{'':22}{'requests':>9}{'connect p50':>13}{'p99':>9}{'request p50':>13}{'p99':>9}{'bulk Gbit/s':>13}"
      f"{'16 clients/s':>14}{'ok':>8}")
secs = float(sys.argv[3])
for name, label in [("direct", "direct"), ("kernel", "kernel mode (kfunc)"),
                    ("proxy", "proxy mode (kfunc)"), ("repair", "proxy mode (repair)")]:
    rows = [tuple(map(float, l.split())) for l in open(f"{w}/lat.{name}")]
    c = sorted(r[0] * 1000 for r in rows); t = sorted(r[1] * 1000 for r in rows)
    g = st.median(float(l) for l in open(f"{w}/bulk.{name}")) * 8 / 1e9
    probes = [json.loads(l) for l in open(f"{w}/probe.{name}")]
    rate = st.median(p["ok"] / secs for p in probes)
    ok = sum(p["ok"] for p in probes) / sum(p["attempts"] for p in probes)
    res[name] = dict(requests=len(rows), connect_p50_ms=pct(c, .5), connect_p99_ms=pct(c, .99),
                     request_p50_ms=pct(t, .5), request_p99_ms=pct(t, .99), bulk_gbit_s=g,
                     concurrent_per_s=rate, concurrent_success=ok)
    r = res[name]
    print(f"{label:<22}{len(rows):>9}{r['connect_p50_ms']:>10.3f} ms{r['connect_p99_ms']:>6.3f} ms"
          f"{r['request_p50_ms']:>10.3f} ms{r['request_p99_ms']:>6.3f} ms{g:>13.2f}{rate:>14.0f}{ok:>8.4f}")
d = res["direct"]
ratios = {}
for name in ("kernel", "proxy", "repair"):
    m = res[name]
    ratios[name] = dict(request_p50=m["request_p50_ms"] / d["request_p50_ms"],
                        request_p99=m["request_p99_ms"] / d["request_p99_ms"],
                        bulk=m["bulk_gbit_s"] / d["bulk_gbit_s"])
    r = ratios[name]
    print(f"{name} / direct: request p50 {r['request_p50']:.3f}x, p99 {r['request_p99']:.3f}x, bulk {r['bulk']:.3f}x")
p, r = res["proxy"], res["repair"]
ratios["repair_vs_kfunc"] = dict(connect_p50=r["connect_p50_ms"] / p["connect_p50_ms"],
                                 request_p50=r["request_p50_ms"] / p["request_p50_ms"],
                                 request_p99=r["request_p99_ms"] / p["request_p99_ms"],
                                 bulk=r["bulk_gbit_s"] / p["bulk_gbit_s"],
                                 concurrent=r["concurrent_per_s"] / p["concurrent_per_s"])
q = ratios["repair_vs_kfunc"]
print(f"repair / kfunc (proxy mode): connect p50 {q['connect_p50']:.3f}x, request p50 "
      f"{q['request_p50']:.3f}x, p99 {q['request_p99']:.3f}x, bulk {q['bulk']:.3f}x, "
      f"16 clients {q['concurrent']:.3f}x")
json.dump(dict(results=res, ratios=ratios), open(out, "w"), indent=1)
print(f"wrote {out}")
PY
