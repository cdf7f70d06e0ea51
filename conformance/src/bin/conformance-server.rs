//! The in-tree server as a real process, for the conformance suite when no `--server`
//! is given (reached through `CARGO_BIN_EXE_conformance-server`): the `exec-server`
//! binary's serve path, without its `exec` and `completions` subcommands.

use std::process::ExitCode;

use clap::Parser;
use exec_server::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.command.is_some() {
        eprintln!("conformance-server: only serves (no subcommands)");
        return ExitCode::from(2);
    }
    // SAFETY: still single-threaded: argument parsing starts no thread.
    unsafe { exec_server::run(args.serve, "conformance-server") }
}
