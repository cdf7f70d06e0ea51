//! Serving from a binary's `main`: stderr logging, the start-up sequence, the tokio
//! runtime, the listener (printing the websocket URL as the one line of stdout), and
//! the exit status. Shared by `exec-server` and the conformance suite's in-tree server.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{Listen, ServeArgs};
use crate::options::ServerOptions;
use crate::server::Server;
use crate::shutdown::Shutdown;
use crate::startup::start_up;

/// Serves `args` until shutdown; errors are printed on stderr prefixed with `program`.
///
/// # Safety
/// As [`start_up`]: the process must still be single-threaded.
pub unsafe fn run(args: ServeArgs, program: &str) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // SAFETY: the caller guarantees a single thread; the stderr logger starts none.
    let options = match unsafe { start_up(&args) } {
        Ok(options) => options,
        Err(err) => {
            eprintln!("{program}: {err}");
            return ExitCode::from(err.exit_code());
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{program}: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(serve(args.listen, options));
    // Tokio reads stdin on a blocking thread that cannot be interrupted; waiting for it
    // would hang a stdio server shut down by a signal until its client writes again.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{program}: {err:#}");
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
