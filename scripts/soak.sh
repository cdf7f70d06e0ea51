#!/usr/bin/env bash
# Bounded soak of the release binary on loopback (not part of CI):
#
#   scripts/soak.sh [SECONDS] [-- extra soak arguments]     (default: 300 seconds)
#
# 50 clients (10 of them through the client library and a cuttable proxy) start, write,
# read, disconnect, reset, resume and abandon sessions for SECONDS, in a warm-up phase
# (the RSS baseline) and a main phase. Then it checks: no lost or repeated byte, no
# process left from the server's children (while it runs and after it stops), no zombie,
# and the server's RSS within 20 % of the baseline. Exit status 0 = PASS.
# Extra arguments go to the soak binary: --clients N, --library-clients N, --ttl S, --seed N.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

seconds=${1:-300}
shift || true
[[ ${1:-} == -- ]] && shift
if ! [[ $seconds =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
    echo "usage: scripts/soak.sh [SECONDS] [-- soak arguments]" >&2
    exit 2
fi

cargo build --release -p exec-server --bin exec-server --example soak
target=${CARGO_TARGET_DIR:-$root/target}
# Every client connection and child needs descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$target/release/examples/soak" --binary "$target/release/exec-server" --seconds "$seconds" "$@"
