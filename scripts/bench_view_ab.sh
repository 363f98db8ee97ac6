#!/bin/bash
# Viewer bench of two tandem binaries in one go, alternating (A, B; GPU path then --cpu; twice),
# then B under a 128 MiB pixel budget: so that a noisy shared machine weighs on both alike.
# Usage: scripts/bench_view_ab.sh BASELINE_BINARY NEW_BINARY [SLICES]
set -u
a=${1:?baseline binary}
b=${2:?new binary}
slices=${3:-100,300,1000}
for round in 1 2; do
  for mode in "" "--cpu"; do
    for bin in "$a" "$b"; do
      echo "=== $bin $mode round $round; $(uptime)"
      "$bin" bench view --slices "$slices" $mode 2>&1 | grep -v XDG_RUNTIME_DIR
    done
  done
done
echo "=== $b, TANDEM_PIXEL_BUDGET_MB=128; $(uptime)"
TANDEM_PIXEL_BUDGET_MB=128 "$b" bench view --slices "$slices" 2>&1 | grep -v XDG_RUNTIME_DIR
echo "=== end; $(uptime)"
