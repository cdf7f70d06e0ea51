#!/usr/bin/env bash
# The adoption path end to end, with the standalone runner against our release server:
# expectations (known failure, unexpected pass, stale entry, --update-expectations round
# trip), --level and exit codes, --repeat and FLAKY, and the three report files validated against their
# schemas. Run from the workspace root after
# `cargo build --release -p exec-server && cargo build -p conformance --bins`.
set -euo pipefail
target=${CARGO_TARGET_DIR:-target}
runner=$target/debug/exec-conformance
server=$target/release/exec-server
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/cases/adopt"
# A MUST case that fails against any server, and a SHOULD one.
cat > "$work/cases/adopt/wrong-shell.xt" <<'XT'
# spec: §7.1
# level: MUST
# transports: ws
>> {"id":1,"method":"initialize","params":{"clientName":"adopt"}}
<< {"id":1,"result":{"sessionId":"$sid"}}
>> {"method":"initialized"}
>> {"id":2,"method":"environment/info"}
<< {"id":2,"result":{"shell":"/no/such/shell"}}
XT
sed -e 's/# level: MUST/# level: SHOULD/' "$work/cases/adopt/wrong-shell.xt" > "$work/cases/adopt/should-wrong-shell.xt"
run() { # expected-exit args...
  local expected=$1; shift
  local code=0
  "$runner" --server "$server" --transcripts "$work/cases" "$@" >"$work/out" 2>&1 || code=$?
  if [ "$code" != "$expected" ]; then
    echo "check-adoption: exit $code, expected $expected, for: $*" >&2
    tail -30 "$work/out" >&2
    exit 1
  fi
}
# A failing MUST case fails the run; the SHOULD one does not (NON-STRICT).
run 101 ws/adopt/wrong-shell --exact --report-dir "$work/r1"
python3 scripts/validate-reports.py "$work/r1" fail
run 0 ws/adopt/should-wrong-shell --exact
run 101 ws/adopt/should-wrong-shell --exact --level should
# Listed as known_failing: the run passes, and the report says so.
cat > "$work/expect.toml" <<'TOML'
[[known_failing]]
case = "ws/adopt/wrong-shell:8"
reason = "§7.1: the shell is not /no/such/shell (a deliberately wrong case)"
TOML
run 0 adopt/wrong --expectations "$work/expect.toml" --report-dir "$work/r2"
python3 scripts/validate-reports.py "$work/r2" pass
grep -q '"expectation": "known_failing"' "$work/r2/report.json"
# An entry for a case that passes: "remove this entry".
cat >> "$work/expect.toml" <<'TOML'

[[known_failing]]
case = "ws/http/readyz"
reason = "wrongly listed"
TOML
run 101 http/readyz --expectations "$work/expect.toml"
grep -q "remove this entry" "$work/out"
# An entry that names no case: meta/expectations-consistent fails.
printf '[[known_failing]]\ncase = "ws/no/such-case"\nreason = "stale"\n' > "$work/stale.toml"
run 101 meta/expectations --expectations "$work/stale.toml" --report-dir "$work/r4"
grep -q "name no case" "$work/out"
python3 scripts/validate-reports.py "$work/r4" fail
# A case that does not parse is a HARNESS-ERROR, which no known_failing entry excuses.
mkdir -p "$work/broken/adopt"
printf '# spec: §7.1\n# level: MUST\n>> {not json\n' > "$work/broken/adopt/broken.xt"
printf '[[known_failing]]\ncase = "adopt/broken"\nreason = "r"\n' > "$work/broken.toml"
code=0
"$runner" --server "$server" --transcripts "$work/broken" adopt/broken --expectations "$work/broken.toml" \
  --report-dir "$work/r5" >"$work/out" 2>&1 || code=$?
[ "$code" = 101 ] || { echo "check-adoption: a broken case exited $code" >&2; exit 1; }
grep -q HARNESS-ERROR "$work/out"
python3 scripts/validate-reports.py "$work/r5" fail
# --repeat: a case that fails its first run only is FLAKY, reported separately; a
# known_flaky entry allowing both verdicts lets the gate pass.
mkdir -p "$work/flaky/adopt"
cat > "$work/flaky/adopt/first-run-fails.xt" <<XT
# spec: §6.2
# level: MUST
# transports: stdio
>> {"id":1,"method":"initialize","params":{"clientName":"adopt"}}
<< {"id":1,"result":{"sessionId":"\$sid"}}
>> {"method":"initialized"}
>> {"id":2,"method":"process/start","params":{"processId":"p1","argv":["/bin/sh","-c","[ -e $work/ran ] || { touch $work/ran; exit 1; }"],"cwd":"\$tmpPath","env":{"PATH":"/usr/bin:/bin"}}}
<< {"id":2,"result":{"processId":"p1"}}
<~ {"method":"process/exited","params":{"processId":"p1","exitCode":0}}
XT
code=0
"$runner" --server "$server" --transcripts "$work/flaky" adopt/ --repeat 3 --report-dir "$work/r6" >"$work/out" 2>&1 || code=$?
[ "$code" = 101 ] || { echo "check-adoption: a flaky case exited $code" >&2; tail -30 "$work/out" >&2; exit 1; }
grep -q "FLAKY stdio/adopt/first-run-fails: verdicts over 3 runs: PASS 2, TIMEOUT 1" "$work/out"
python3 scripts/validate-reports.py "$work/r6" fail
grep -q "### Flaky" "$work/r6/summary.md"
rm "$work/ran"
printf '[[known_flaky]]\ncase = "adopt/first-run-fails"\nallowed = ["PASS", "TIMEOUT"]\nreason = "r"\n' > "$work/flaky.toml"
"$runner" --server "$server" --transcripts "$work/flaky" adopt/ --repeat 3 --expectations "$work/flaky.toml" >"$work/out" 2>&1 \
  || { echo "check-adoption: an allowed flaky case failed the run" >&2; tail -30 "$work/out" >&2; exit 1; }
# A revision the manifest does not declare would skip everything: refused (exit 2).
run 2 --manifest examples/python-server/manifest.toml --revision 2026-06
grep -q "declares 2026-08 only" "$work/out"
# --update-expectations: from no file to an entry, and the next run passes.
run 101 adopt/wrong --expectations "$work/update.toml" --update-expectations
grep -q 'case = "ws/adopt/wrong-shell"' "$work/update.toml"
run 0 adopt/wrong --expectations "$work/update.toml"
echo "check-adoption: expectations, levels, exit codes and reports as documented"
