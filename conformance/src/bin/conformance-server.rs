//! The in-tree server as a real process, for the conformance suite when no `--server`
//! is given (reached through `CARGO_BIN_EXE_conformance-server`). Same start-up as the
//! `exec-server` binary's serve path; no `exec` subcommand.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use exec_server::cli::{Args, Listen};
use exec_server::{Server, ServerOptions, Shutdown};

fn main() -> ExitCode {
    let args = Args::parse();
    if args.command.is_some() {
        eprintln!("conformance-server: only serves (no subcommands)");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // SAFETY: still single-threaded (as in exec-server's main): no runtime yet.
    let options = match unsafe { exec_server::start_up(&args.serve) } {
        Ok(options) => options,
        Err(err) => {
            eprintln!("conformance-server: {err}");
            return ExitCode::from(err.exit_code());
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("conformance-server: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(serve(args.serve.listen, options));
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("conformance-server: {err:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(listen: Listen, options: ServerOptions) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    tokio::spawn(shutdown.clone().trigger_on_signals());
    let server = Server::new(options, shutdown);
    match listen {
        Listen::Stdio => server.serve_stdio().await,
        Listen::WebSocket(addr) => {
            let bound = server
                .bind_websocket(addr)
                .await
                .map_err(|err| anyhow::anyhow!("cannot listen on ws://{addr}: {err}"))?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", bound.url()?)?;
            stdout.flush()?;
            drop(stdout);
            bound.serve().await?;
        }
    }
    Ok(())
}
