//! The standalone conformance runner: every transcript is built in, so an
//! implementation's CI needs no checkout of this repository at run time
//! (`cargo install --path conformance`, then
//! `exec-conformance --server ./my-server --manifest manifest.toml --report-dir out`).
//! Same options and trials as `cargo test -p conformance -- …`; `--server` is required.

use std::process::ExitCode;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

fn main() -> ExitCode {
    conformance_runner::suite::main(
        std::env::args(),
        conformance_runner::suite::Source {
            workspace: None,
            embedded: embedded::CASES,
            in_tree: None,
        },
    )
}
