#!/usr/bin/env bash
# Proves that `exec_server()` works in a crate outside this workspace that depends only
# on exec-server-harness (by path), with no exec-server binary built beforehand.
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
cat > "$crate/tests/uses_harness.rs" <<'RS'
use std::time::Duration;
use exec_server_harness::exec_server;

#[tokio::test]
async fn echo_prints_hi() -> Result<(), exec_server_harness::HarnessError> {
    let server = exec_server().await?;
    let session = server.initialize("my-test").await?;
    let pid = session.start(["sh", "-c", "echo hi"]).await?;
    let out = session.read_to_end(&pid).await?;
    assert_eq!(out.stdout, b"hi\n");
    server.expect_event(|e| e.is_exited(&pid)).within(Duration::from_secs(2)).await?;
    Ok(())
}
RS
# Share the workspace's target directory so registry crates are not rebuilt.
CARGO_TARGET_DIR="$root/target/downstream" cargo test --manifest-path "$crate/Cargo.toml" 2>&1 | grep -E "^test |test result|error|panicked"
