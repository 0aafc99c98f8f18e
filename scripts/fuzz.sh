#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SYNWALL_FUZZ_SECS seconds
# each (default 15; the README's test command uses the default, a long run
# sets e.g. 1200), from seeds written by `synwall-xtask fuzz-seeds` plus
# the corpus earlier runs grew in target/fuzz/corpus/. Prints each target's
# executions and coverage; fails on the first crash, leaving its input in
# target/fuzz/artifacts/TARGET/. Needs no nightly toolchain: the targets
# are built without a sanitizer (safe Rust, overflow checks on).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${SYNWALL_FUZZ_SECS:-15}
targets=${SYNWALL_FUZZ_TARGETS:-wire core config replay proxy_protocol}
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz --version 0.13.1
fi

out=target/fuzz
rm -rf "$out/seeds"
cargo run --locked -q -p synwall-xtask -- fuzz-seeds "$out/seeds"
# Short runs build unoptimised (half the build time; a run of seconds needs
# no speed), long ones optimised.
profile=()
[ "$secs" -lt 300 ] && profile=(--dev)
cargo fuzz build --sanitizer none "${profile[@]}"

for t in $targets; do
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
  log="$out/$t.log"
  if ! cargo fuzz run --sanitizer none "${profile[@]}" "$t" "$out/corpus/$t" "$out/seeds/$t" -- \
      -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$out/artifacts/$t/" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t failed; its input is in $out/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  echo "fuzz: $t: $runs executions in ${secs}s, $cov, corpus $(ls "$out/corpus/$t" | wc -l) inputs"
done
