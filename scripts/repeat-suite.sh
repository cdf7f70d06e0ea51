#!/usr/bin/env bash
# The whole conformance suite, every trial run N times, against the release server
# (not part of CI):
#
#   scripts/repeat-suite.sh [N] [-- more exec-conformance arguments]   (default N: 20)
#
# e.g. `scripts/repeat-suite.sh 20`, or on a loaded machine
# `scripts/repeat-suite.sh 1 -- --time-scale 3`. Both transports, revision 2026-08 and
# then 2026-06. A trial whose runs end in different verdicts is FLAKY: listed on stderr
# and in target/repeat-report/REVISION/summary.md. Exit status 0 = every trial ended
# alike in every run, and passed (or was skipped).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${1:-20}
shift || true
[[ ${1:-} == -- ]] && shift
if ! [[ $runs =~ ^[0-9]+$ ]] || (( runs < 1 )); then
    echo "usage: scripts/repeat-suite.sh [N] [-- exec-conformance arguments]" >&2
    exit 2
fi
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p exec-server
cargo build -p conformance --bin exec-conformance
status=0
for revision in 2026-08 2026-06; do
    report=$target/repeat-report/$revision
    rm -rf "$report"
    mkdir -p "$target/repeat-report"
    start=$SECONDS
    "$target/debug/exec-conformance" --server "$target/release/exec-server" \
        --manifest conformance/exec-server.manifest.toml --revision "$revision" \
        --repeat "$runs" --report-dir "$report" "$@" >"$report.log" 2>&1 || status=1
    echo "revision $revision, $runs runs of each trial, $((SECONDS - start)) s:"
    grep '^exec-conformance:' "$report.log" || tail -20 "$report.log"
done
exit $status
