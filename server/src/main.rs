//! The `exec-server` binary: parse arguments, start the orphan watchdog while the
//! process is still single-threaded, then run the server on a tokio runtime.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use exec_server::cli::{Args, Listen};
use exec_server::watchdog::Watchdog;
use exec_server::{Server, Shutdown};

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let watchdog = match Watchdog::start() {
        Ok(watchdog) => Some(watchdog),
        Err(err) => {
            tracing::warn!(%err, "could not start the orphan watchdog");
            None
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("exec-server: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(args, watchdog));
    // Tokio reads stdin on a blocking thread that cannot be interrupted; waiting for it
    // would hang a stdio server shut down by a signal until its client writes again.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("exec-server: {err:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args, watchdog: Option<Watchdog>) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    tokio::spawn(shutdown.clone().trigger_on_signals());
    let options = args.server_options(watchdog)?;
    let server = Server::new(options, shutdown);
    match args.listen {
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
