#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every check
# CI runs. Run as root on Debian 12: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

start=$SECONDS
step() { printf '\n==> [%ds] %s\n' $((SECONDS - start)) "$*"; }
step "cargo fmt --check";                          cargo fmt --all --check
step "cargo clippy --all-targets -- -D warnings";  cargo clippy --locked --workspace --all-targets -- -D warnings
# The netns tests run the bench kit's binaries (another workspace member's,
# which cargo test alone does not build).
step "cargo build --bins";                         cargo build --locked --bins
step "cargo test";                                 cargo test --locked 2>&1 | tee /tmp/synwall-test.$$.log
step "soak, short (bench/soak.sh --short)";       SKIP_SETUP=1 bash bench/soak.sh --short
step "fuzz targets (SYNWALL_FUZZ_SECS each)";       bash scripts/fuzz.sh
step "cargo bench --no-run";                       cargo bench --locked --no-run
step "Debian package";                             bash scripts/package.sh && bash scripts/check-package.sh
step "Debian's kernels in qemu (6.1, 6.12, systemd)"; bash scripts/test-kernels.sh

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\nsynwall: %d passed, %d failed, %d skipped\n", p, f, i }' \
  /tmp/synwall-test.$$.log
rm -f /tmp/synwall-test.$$.log
