//! The `exec-server` binary: parse arguments; to serve, run the library's start-up
//! sequence (containment, orphan watchdog) while the process is still single-threaded,
//! then run the server on a tokio runtime;
//! for `exec`, run the client command and exit with the remote exit code.

use std::io::Write;
use std::process::ExitCode;

mod exec;

use clap::Parser;
use exec_server::cli::{Args, Command, ExecArgs};

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Exec(exec)) => {
            init_exec_logging();
            return run_exec(*exec);
        }
        Some(Command::Completions { shell }) => return print_completions(shell),
        None => {}
    }
    // SAFETY: still single-threaded: argument parsing starts no thread, and the tokio
    // runtime is built only inside `run`.
    unsafe { exec_server::run(args.serve, "exec-server") }
}

/// `exec`'s logs go to stderr among the command's own output: colour only on a
/// terminal (and not with `NO_COLOR`), timestamps only on a terminal. By default it
/// shows what a spawned stdio server (e.g. ssh) says on stderr.
fn init_exec_logging() {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // A lost connection is printed once, by `exec`, with its reason: the
        // library's own warning about it would say it a second time.
        tracing_subscriber::EnvFilter::new(
            "warn,exec_client::stderr=info,exec_client::connection=error",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(terminal && !no_color)
        .with_env_filter(filter);
    match terminal {
        true => builder.init(),
        false => builder.without_time().init(),
    }
}

/// `completions SHELL`: the completion script on stdout.
fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    let mut command = Args::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "exec-server", &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("exec-server completions: {err}");
            ExitCode::from(1)
        }
    }
}
fn run_exec(args: ExecArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("exec-server exec: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        let options = exec_options(args).map_err(|err| exec::ExecError {
            message: format!("{err:#}"),
            exit_code: exec::CONNECTION_FAILED,
        })?;
        exec::run(options).await
    });
    // Our stdin is read on a blocking thread; do not wait for it to see EOF.
    runtime.shutdown_background();
    // The terminal is restored by now: `exec::run` has returned. Errors are printed
    // here, once.
    match outcome {
        Ok(exec::Outcome::Exit(code)) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Ok(exec::Outcome::BrokenPipe) => exec::die_of_sigpipe(),
        Err(err) => {
            eprintln!("exec-server exec: {}", err.message);
            ExitCode::from(u8::try_from(err.exit_code).unwrap_or(255))
        }
    }
}

fn exec_options(args: ExecArgs) -> anyhow::Result<exec::ExecOptions> {
    use exec_client::environments::{Environments, URL_OVERRIDE_VAR};
    use exec_client::BearerToken;
    use exec_client::{ExecServerTransport, TOKEN_VAR};
    let environments = || -> anyhow::Result<Environments> {
        let path = args
            .environments_file
            .clone()
            .or_else(exec_client::environments::default_path);
        match path {
            Some(path) if args.environments_file.is_some() || path.exists() => {
                Ok(Environments::load(&path)?)
            }
            _ => Ok(Environments::default()),
        }
    };
    // A token file of an environments entry goes with that entry's server only.
    let (transport, entry_token_file) = match (&args.connect, &args.environment) {
        (Some(connect), _) => (
            ExecServerTransport::parse(connect).map_err(anyhow::Error::msg)?,
            None,
        ),
        (None, Some(id)) => {
            let path = args
                .environments_file
                .clone()
                .or_else(exec_client::environments::default_path);
            let origin = match &path {
                Some(path) if args.environments_file.is_some() || path.exists() => {
                    path.display().to_string()
                }
                Some(path) => anyhow::bail!(
                    "no environment {id:?}: there is no environments file at {} (or give one with --environments-file)",
                    path.display()
                ),
                None => anyhow::bail!(
                    "no environment {id:?}: no environments file (HOME is not set; give one with --environments-file)"
                ),
            };
            let environment = environments()?.lookup(id, &origin)?.clone();
            (environment.transport, environment.token_file)
        }
        (None, None) => {
            // The variable wins over the file, so a broken file does not get in its way.
            // Empty means unset.
            let url_override = std::env::var(URL_OVERRIDE_VAR)
                .ok()
                .filter(|value| !value.is_empty());
            let environments = match url_override {
                Some(_) => Environments::default(),
                None => environments()?,
            };
            let environment = environments
                .default_environment(url_override.as_deref())?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no exec-server given: use --connect, --environment, {URL_OVERRIDE_VAR} or a default environment"
                    )
                })?;
            (environment.transport, environment.token_file)
        }
    };
    let token = match (&args.token_file, &entry_token_file) {
        (Some(path), _) | (None, Some(path)) => Some(
            BearerToken::read_file(path)
                .map_err(|err| anyhow::anyhow!("token file {}: {err}", path.display()))?,
        ),
        (None, None) => match std::env::var(TOKEN_VAR) {
            Ok(value) if !value.is_empty() => {
                Some(BearerToken::new(value).map_err(|err| anyhow::anyhow!("{TOKEN_VAR}: {err}"))?)
            }
            _ => None,
        },
    };
    // --env-file in order, then -e; TERM follows ours on a PTY unless one of them set it.
    let mut env = std::collections::BTreeMap::new();
    for path in &args.env_file {
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("--env-file {}: {err}", path.display()))?;
        let variables = exec_server::cli::parse_env_file(&text)
            .map_err(|(line, err)| anyhow::anyhow!("{}:{line}: {err}", path.display()))?;
        env.extend(variables);
    }
    for (name, value) in args.env {
        // `-e NAME` passes our value, and nothing when we have none; a value that is
        // not UTF-8 cannot travel in JSON, and dropping it silently would surprise.
        let value = match value {
            Some(value) => Some(value),
            None => match std::env::var(&name) {
                Ok(value) => Some(value),
                Err(std::env::VarError::NotPresent) => None,
                Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!(
                    "-e {name}: its value here is not UTF-8, which cannot be sent; give one with -e {name}=VALUE"
                ),
            },
        };
        if let Some(value) = value {
            env.insert(name, value);
        }
    }
    if args.tty && !env.contains_key("TERM") {
        if let Ok(term) = std::env::var("TERM") {
            env.insert("TERM".to_owned(), term);
        }
    }
    Ok(exec::ExecOptions {
        transport,
        bearer_token: token,
        tty: args.tty,
        stdin: args.stdin,
        cwd: args.cwd,
        env,
        argv: args.command,
        connect_timeout: args.connect_timeout,
    })
}
