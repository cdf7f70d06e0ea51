#!/usr/bin/env python3
"""Negative controls (issue 17): proves that the conformance cases listed in
fixtures/negative-controls.toml can fail. For each fault it runs the standalone runner
with only that fault's cases against `broken-server --fault NAME`, reads the verdicts
from the run's report.json, and checks that every listed case caught the fault: its
verdict is FAIL, NON-STRICT, TIMEOUT or CRASH (PASS, SKIPPED and HARNESS-ERROR do not
count, nor does a CRASH because the broken server did not start, unless the fault is
one of start-up). Before its cases, each fault's server must answer `initialize` on
stdio: a broken server that does not run at all would fail every case and prove
nothing.  Prints a fault x case table and the number of uncovered cases; exits 1 naming
every fault and case that was not caught.

Run from the workspace root after
  cargo build -p exec-server --features faults --bin broken-server
  cargo build -p conformance --bins

usage: scripts/negative-controls.py [--jobs N] [--fault NAME]...
"""
import argparse
import concurrent.futures
import json
import os
import pathlib
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONTROLS = ROOT / "fixtures" / "negative-controls.toml"
TRANSCRIPTS = ROOT / "fixtures" / "transcripts"
MANIFEST = ROOT / "conformance" / "exec-server.manifest.toml"
CAUGHT = {"FAIL", "NON-STRICT", "TIMEOUT", "CRASH"}
TRANSPORTS = ("ws", "stdio")
# Faults that keep the server from starting as the runner starts it: for them a CRASH
# "the server did not start" is the catch. For any other fault it is not (a
# broken-server that fails to start would make every case look as if it caught it).
START_UP_FAULTS = {"no-readyz"}
NOT_STARTED = "the server did not start"


def target_dir():
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    return target if target.is_absolute() else ROOT / target


def transports_of(case):
    """The transports a case runs on, from its `# transports:` header (default both)."""
    path = TRANSCRIPTS / f"{case}.xt"
    if not path.is_file():
        sys.exit(f"negative-controls: {CONTROLS.name} lists {case!r}, which is not a case")
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].partition(":")
        if key.strip() == "transports":
            return [t.strip() for t in value.split(",") if t.strip()]
    return list(TRANSPORTS)


def trials_of(entry):
    """A listed id as trials: `ws/family/name` is itself; `family/name` is every
    transport the case runs on. (The family `stdio` is also a transport's name, so the
    number of slashes tells them apart.)"""
    if entry.count("/") == 2:
        head, _, rest = entry.partition("/")
        if head not in TRANSPORTS:
            sys.exit(f"negative-controls: {entry!r}: {head!r} is no transport")
        if head not in transports_of(rest):
            sys.exit(f"negative-controls: {entry!r}: the case does not run on {head}")
        return [entry]
    return [f"{transport}/{entry}" for transport in transports_of(entry)]


def all_trials(runner):
    """Every trial of the suite (`--list` starts no server)."""
    listed = subprocess.run([str(runner), "--server", "unused", "--manifest", str(MANIFEST), "--list"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line.rsplit(": ", 1)[0] for line in listed.splitlines() if line.endswith(": test")]


INITIALIZE = (b'{"jsonrpc":"2.0","id":1,"method":"initialize",'
              b'"params":{"clientName":"negative-controls"}}\n')


def answers_initialize(broken, fault, seconds=10.0):
    """Whether `broken-server --fault FAULT --listen stdio` answers `initialize` with a
    result within `seconds` (stdout lines that are not the answer are passed over)."""
    with subprocess.Popen([str(broken), "--fault", fault, "--listen", "stdio"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, start_new_session=True) as proc:
        try:
            proc.stdin.write(INITIALIZE)
            proc.stdin.flush()
            deadline = time.monotonic() + seconds
            pending = b""
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([proc.stdout], [], [], left)[0]:
                    return False
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    return False
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(message, dict) and message.get("id") == 1 and "result" in message:
                        return True
            return False
        finally:
            # SIGTERM lets it clean up; then its process group (start_new_session) goes,
            # whatever the fault left in it.
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_fault(fault, trials, every_trial, runner, broken, work):
    """Runs `trials` against the fault; returns ({trial: (verdict, detail)}, seconds,
    log tail), or no verdicts when its server does not run at all."""
    if not answers_initialize(broken, fault):
        return None, 0.0, f"broken-server --fault {fault} did not answer initialize on stdio"
    report_dir = work / fault
    # libtest-mimic takes one filter only: every other trial is skipped by its exact name.
    skips = [arg for trial in every_trial if trial not in trials for arg in ("--skip", trial)]
    command = [
        str(runner),
        "--server", f"{shlex.quote(str(broken))} --fault {fault}",
        "--manifest", str(MANIFEST),
        "--report-dir", str(report_dir),
        "--exact", *skips,
    ]
    started = time.monotonic()
    # The gate fails by design (the server is broken): the exit code says nothing here.
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    report = report_dir / "report.json"
    if not report.is_file():
        return None, seconds, (done.stdout + done.stderr)[-3000:]
    verdicts = {case["trial"]: (case["verdict"], case.get("detail") or "")
                for case in json.loads(report.read_text())["cases"]}
    return verdicts, seconds, ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3, help="faults run at once (default 3)")
    parser.add_argument("--fault", action="append", help="only this fault (repeatable)")
    args = parser.parse_args()

    controls = tomllib.loads(CONTROLS.read_text())
    faults = controls.get("faults", {})
    uncovered = controls.get("uncovered", {}).get("cases", [])
    runner = target_dir() / "debug" / "exec-conformance"
    broken = target_dir() / "debug" / "broken-server"
    for binary, build in [(runner, "cargo build -p conformance --bins"),
                          (broken, "cargo build -p exec-server --features faults --bin broken-server")]:
        if not binary.is_file():
            sys.exit(f"negative-controls: {binary} is missing; build it with `{build}`")

    # The fault names are broken-server's: every one listed, none unknown.
    listed = subprocess.run([str(broken), "--list-faults"], capture_output=True, text=True,
                            check=True).stdout
    known = [line.split("\t")[0] for line in listed.splitlines() if line]
    if set(known) != set(faults):
        sys.exit("negative-controls: the faults of broken-server and of "
                 f"{CONTROLS.name} differ: only broken-server has "
                 f"{sorted(set(known) - set(faults))}, only the file has "
                 f"{sorted(set(faults) - set(known))}")
    chosen = args.fault or known
    for fault in chosen:
        if fault not in faults:
            sys.exit(f"negative-controls: no fault {fault!r}; the faults are {', '.join(known)}")

    plan = {fault: sorted({t for entry in faults[fault] for t in trials_of(entry)}) for fault in chosen}
    every_trial = all_trials(runner)
    unknown = sorted({t for trials in plan.values() for t in trials} - set(every_trial))
    if unknown:
        sys.exit(f"negative-controls: not trials of the suite: {unknown}")
    started = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory(prefix="negative-controls-") as work, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        # The slowest first, so that the last ones to start are short.
        order = sorted(chosen, key=lambda fault: -len(plan[fault]))
        futures = {pool.submit(run_fault, fault, set(plan[fault]), every_trial, runner, broken,
                               pathlib.Path(work)): fault
                   for fault in order}
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()

    failures = []
    width = max(len(trial) for trials in plan.values() for trial in trials)
    print(f"{'fault':<28} {'trial':<{width}} verdict")
    for fault in chosen:
        verdicts, seconds, log = results[fault]
        if verdicts is None:
            failures.append(f"{fault}: the runner wrote no report:\n{log}")
            print(f"{fault:<28} {'(no report)':<{width}} -")
            continue
        for trial in plan[fault]:
            verdict, detail = verdicts.get(trial, ("MISSING", ""))
            caught = verdict in CAUGHT
            if verdict == "CRASH" and detail.startswith(NOT_STARTED) and fault not in START_UP_FAULTS:
                caught = False
                verdict = "NOT-STARTED"
            mark = "caught" if caught else "NOT CAUGHT"
            print(f"{fault:<28} {trial:<{width}} {verdict:<11} {mark}")
            if not caught:
                failures.append(f"fault {fault}: case {trial} did not catch it ({verdict})")
        print(f"{fault:<28} {'':<{width}} {len(plan[fault])} trials in {seconds:.1f}s")
    elapsed = time.monotonic() - started
    trials = sum(len(p) for p in plan.values())
    print(f"negative controls: {len(chosen)} faults, {trials} trials, {elapsed:.0f}s; "
          f"{len(uncovered)} cases uncovered (listed under no fault)")
    if failures:
        print("negative controls FAILED:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
