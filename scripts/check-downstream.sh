#!/usr/bin/env bash
# Proves that `exec_server()` works in a crate outside this workspace that depends only
# on exec-server-harness (by path) and tokio, with no exec-server binary built
# beforehand, by running harness/README.md's example there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
crate=$(mktemp -d)
trap 'rm -rf "$crate"' EXIT
mkdir -p "$crate/tests"
cat > "$crate/Cargo.toml" <<TOML
[package]
name = "downstream-user"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dev-dependencies]
exec-server-harness = { path = "$root/harness" }
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
TOML
mkdir -p "$crate/src" && echo "" > "$crate/src/lib.rs"
# The test is harness/README.md's first `rust` example, verbatim, so the README cannot
# drift from what compiles.
awk '/^```rust$/ {inside = 1; next} inside && /^```$/ {exit} inside {print}' \
    "$root/harness/README.md" > "$crate/tests/uses_harness.rs"
grep -q 'async fn' "$crate/tests/uses_harness.rs" || {
    echo "no rust example found in harness/README.md" >&2
    exit 1
}
# Share the workspace's target directory so registry crates are not rebuilt.
CARGO_TARGET_DIR="$root/target/downstream" cargo test --manifest-path "$crate/Cargo.toml" 2>&1 | grep -E "^test |test result|error|panicked"
