//! `exec-bench`: benchmarks exec-server — and, with `--peer`, another implementation —
//! as ratios to a bare floor measured in the same run, floor and server alternating
//! over several rounds. See BENCHMARKS.md for the method and the rows.
//!
//! `cargo run --release -p exec-bench -- [--peer CMD] [--peer-revision 2026-08|2026-06]
//! [--quick] [--json FILE] [--only 1,2,…]`. Exits 1 if a row of ours errors or times out; a peer's
//! failures are reported, not fatal.

mod client;
mod floor;
mod report;
mod rows;
mod server;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;

use report::{Row, Status};
use rows::{Kind, Plan};
use server::Implementation;

#[derive(Parser)]
#[command(about = "exec-server benchmarks: every figure a ratio to a bare floor")]
struct Cli {
    /// Another implementation, started as `CMD --listen ws://127.0.0.1:0` (and
    /// `CMD --listen stdio`); its ratios are printed beside ours.
    #[arg(long)]
    peer: Option<String>,
    /// The peer's protocol revision: 2026-08 sends `file:` URIs for paths.
    #[arg(long, default_value = "2026-08", value_parser = ["2026-08", "2026-06"])]
    peer_revision: String,
    /// Fewer rounds and smaller sizes (under 60 s).
    #[arg(long)]
    quick: bool,
    /// Write every row as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only these rows, by the number they are printed with (`--only 1,2,5`; rows
    /// 5–7 are one run, selected by any of them).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=12))]
    only: Vec<u32>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(floor::HELPER_ARG) {
        return floor::helper_main(&args[2..]);
    }
    let cli = Cli::parse();
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let failed = runtime.block_on(run(cli))?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// Thousands of children each hold pipes: lift the soft descriptor limit to the hard one.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn run(cli: Cli) -> Result<bool> {
    let wall = Instant::now();
    let mut implementations = vec![Implementation::ours()?];
    if let Some(peer) = &cli.peer {
        implementations.push(Implementation::peer(peer, cli.peer_revision == "2026-08")?);
    }
    let ws_floor = floor::WsFloor::start()?;
    let plan = Plan {
        quick: cli.quick,
        rounds: if cli.quick { 3 } else { 5 },
        ws_floor_url: ws_floor.url.clone(),
    };
    let limit = Duration::from_secs(if cli.quick { 20 } else { 60 });
    println!(
        "exec-bench: {} rounds per row, floor and server alternating; ratio = server median ÷ floor median (> 1 is slower); row limit {limit:?}",
        plan.rounds
    );
    report::print_header();
    let mut rows: Vec<Row> = Vec::new();
    let selected = Kind::ALL
        .iter()
        .filter(|kind| cli.only.is_empty() || cli.only.iter().any(|&row| kind.is_row(row)));
    for kind in selected {
        for implementation in &implementations {
            for &transport in kind.transports() {
                let row_of = |status, why: String| {
                    Row::new(kind.name(), transport.name(), &implementation.name, "-")
                        .failed(status, why)
                };
                let measured =
                    tokio::time::timeout(limit, kind.run(&plan, implementation, transport)).await;
                let new_rows = match measured {
                    Ok(Ok(new_rows)) => new_rows,
                    Ok(Err(error)) => vec![row_of(Status::Error, format!("{error:#}"))],
                    Err(_) => vec![row_of(
                        Status::Timeout,
                        format!("no result within {limit:?}"),
                    )],
                };
                for row in &new_rows {
                    report::print_row(row);
                }
                rows.extend(new_rows);
            }
        }
    }
    drop(ws_floor);
    if cli.peer.is_some() {
        report::print_comparison(&rows, "ours", "peer");
    }
    if let Some(path) = &cli.json {
        report::write_json(path, &rows)?;
    }
    println!(
        "\nexec-bench: wall time {:.1} s",
        wall.elapsed().as_secs_f64()
    );
    Ok(rows.iter().any(|row| {
        row.implementation == "ours" && matches!(row.status, Status::Error | Status::Timeout)
    }))
}
