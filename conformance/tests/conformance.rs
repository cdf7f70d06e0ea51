//! The conformance suite as a libtest-compatible test target: one trial per
//! `transport/case-id` (see `conformance::suite`). Without `--server` (or
//! `EXEC_CONFORMANCE_SERVER`) it grades the in-tree server, run as a real process.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is inside the workspace");
    conformance_runner::suite::main(
        std::env::args(),
        conformance_runner::suite::Source {
            workspace: Some(workspace),
            embedded: &[],
            in_tree: Some(env!("CARGO_BIN_EXE_conformance-server")),
        },
    )
}
