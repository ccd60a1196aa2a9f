#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each.
#
#   FUZZ_SECONDS=30 (default) per target; FUZZ_TARGETS="ledger subid" to pick.
#
# The machine has stable Rust only. cargo-fuzz needs `-Z` flags, which
# RUSTC_BOOTSTRAP=1 unlocks on stable. The targets are built without a
# sanitizer (`-s none`): they drive safe Rust parsers, where AddressSanitizer
# adds build time and finds nothing that a panic does not show; libFuzzer's
# coverage guidance and panics-as-crashes are what matter. A crash leaves its
# input in fuzz/artifacts/<target>/ and fails this script; keep the input in
# fuzz/regressions/<target>/, which the crates' regression tests replay.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-30}"
targets="${FUZZ_TARGETS:-config_json annotations subid mapping ledger}"
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi
cargo fuzz build -s none -O
for t in $targets; do
  mkdir -p "corpus/$t"
  # Seed with well-formed inputs (seeds/<target>/) and past crashes
  # (regressions/<target>/).
  cp -n seeds/"$t"/* regressions/"$t"/* "corpus/$t/" 2>/dev/null || true
  echo "== fuzz $t for ${seconds}s"
  log="$(mktemp)"
  if ! cargo fuzz run -s none -O "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 -timeout=10 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz.sh: target $t crashed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ *DONE' "$log" || true
  rm -f "$log"
done
