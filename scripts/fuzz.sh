#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ for a bounded time with cargo-fuzz on the stable
# toolchain (libFuzzer, no sanitizer), then prints executions, coverage and findings.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 60 seconds, every target)
#
# The corpus grows in fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET), crashes land in
# fuzz/artifacts/TARGET; both are ignored by git. Reproduce a crash with
#   cargo fuzz run --sanitizer none TARGET fuzz/artifacts/TARGET/crash-…
# and keep the input as a regression test in the normal test suite.
# Exit status: 0 if no target found anything, 1 otherwise.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if (( ${#targets[@]} == 0 )); then
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

# Stable toolchain: --sanitizer none avoids the nightly-only -Zsanitizer flags.
fuzz=(cargo fuzz run --sanitizer none --release)
if ! (cd fuzz && cargo fuzz build --sanitizer none --release) >"${TMPDIR:-/tmp}/fuzz-build.$$" 2>&1; then
    cat "${TMPDIR:-/tmp}/fuzz-build.$$" >&2
    echo "build failed" >&2
    exit 1
fi
rm -f "${TMPDIR:-/tmp}/fuzz-build.$$"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    max_len=4096
    [[ $target == classify ]] && max_len=65536
    echo "== $target for ${seconds}s"
    set +e
    (cd fuzz && "${fuzz[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -dict=dict/jsonrpc.dict \
        -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/") >"$logs/$target" 2>&1
    rc=$?
    set -e
    execs=$(grep -oP 'stat::number_of_executed_units:\s*\K\d+' "$logs/$target" || echo "?")
    rate=$(grep -oP 'stat::average_exec_per_sec:\s*\K\d+' "$logs/$target" || echo "?")
    cov=$(grep -oP '#\d+\s+(DONE|pulse|NEW|REDUCE)\s+cov: \K\d+' "$logs/$target" | tail -1 || true)
    ft=$(grep -oP '#\d+\s+(DONE|pulse|NEW|REDUCE)\s+cov: \d+ ft: \K\d+' "$logs/$target" | tail -1 || true)
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    if (( rc == 0 )); then
        verdict="no findings"
    else
        verdict="FOUND SOMETHING (exit $rc): see fuzz/artifacts/$target"
        status=1
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$logs/$target" | head -20 || true
    fi
    summary+=("$(printf '%-14s %6ss  %12s execs  %7s/s  cov %-6s ft %-6s corpus %-5s %s' \
        "$target" "$seconds" "$execs" "$rate" "${cov:-?}" "${ft:-?}" "$corpus" "$verdict")")
done
echo
printf '%s\n' "${summary[@]}"
exit $status
