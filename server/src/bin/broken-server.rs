//! `broken-server`: the real server (`exec_server::run`, the serve options of
//! `exec-server`) with exactly one deliberate fault, `--fault NAME`, so that the
//! conformance suite can be shown to catch it (negative controls, issue 17; see
//! `fixtures/negative-controls.toml`). Built only with the `faults` feature, in debug.

use std::process::ExitCode;

use clap::Parser;
use exec_server::cli::ServeArgs;
use exec_server::faults::{self, Fault, FAULTS};

/// The serve options of `exec-server`, plus the fault.
#[derive(Debug, Parser)]
#[command(
    name = "broken-server",
    about = "exec-server with one deliberate fault (negative controls)"
)]
struct Args {
    /// The fault to inject (required; see --list-faults)
    #[arg(long, value_name = "NAME")]
    fault: Option<String>,

    /// Print every fault's name and what it breaks, then exit
    #[arg(long)]
    list_faults: bool,

    #[command(flatten)]
    serve: ServeArgs,
}

/// Exit code of a usage error, as `exec-server`'s.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list_faults {
        for (_, name, what) in FAULTS {
            println!("{name}\t{what}");
        }
        return ExitCode::SUCCESS;
    }
    let fault = match args.fault.as_deref().map(|name| (name, Fault::parse(name))) {
        Some((_, Some(fault))) => fault,
        Some((name, None)) => return usage(&format!("unknown fault {name:?}")),
        None => return usage("--fault NAME is required"),
    };
    if faults::set(fault).is_err() {
        eprintln!("broken-server: a fault was already set");
        return ExitCode::from(1);
    }
    eprintln!(
        "broken-server: negative control, fault {} is on",
        fault.name()
    );
    // SAFETY: still single-threaded: argument parsing starts no thread, and the tokio
    // runtime is built only inside `run`.
    unsafe { exec_server::run(args.serve, "broken-server") }
}

/// A usage error naming every fault.
fn usage(problem: &str) -> ExitCode {
    let names: Vec<&str> = FAULTS.iter().map(|(_, name, _)| *name).collect();
    eprintln!(
        "broken-server: {problem}; the faults are: {}",
        names.join(", ")
    );
    ExitCode::from(USAGE)
}
