//! The rows: what each measures on the server and on its floor, alternating over the
//! rounds. Each row starts its own server, so one row's leftovers never weigh on
//! another, and every server is stopped when its row ends (or times out).

mod latency;
mod memory;
mod scale;
mod throughput;

use std::time::Duration;

use anyhow::Result;
use exec_protocol::StartParams;

use crate::client::{Conn, Session};
use crate::report::Row;
use crate::server::{Implementation, Server, Transport};

/// Everything a row needs to know about the run.
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    /// The bare websocket floor (echo and zeros).
    pub ws_floor_url: String,
}

impl Plan {
    /// `quick` or `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// The rows, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    StartResponse,
    StartExited,
    RoundTrip,
    Notifications,
    PipelinedStarts,
    Pty,
    LongPoll,
    Concurrent,
    Sessions,
    SlowReader,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::StartResponse,
        Kind::StartExited,
        Kind::RoundTrip,
        Kind::Notifications,
        Kind::PipelinedStarts,
        Kind::Pty,
        Kind::LongPoll,
        Kind::Concurrent,
        Kind::Sessions,
        Kind::SlowReader,
    ];

    /// The row's name (for a timeout or an error, which yield one row).
    pub fn name(self) -> &'static str {
        match self {
            Kind::StartResponse => "1 process/start → response (/bin/true)",
            Kind::StartExited => "2 process/start → process/exited",
            Kind::RoundTrip => "3 round trip (environment/info)",
            Kind::Notifications => "4 stdout via notifications",
            Kind::PipelinedStarts => "5-7 pipelined starts / terminates / RSS",
            Kind::Pty => "8 PTY throughput",
            Kind::LongPoll => "9 process/read long-poll throughput",
            Kind::Concurrent => "10 concurrent sleeps",
            Kind::Sessions => "11 idle sessions",
            Kind::SlowReader => "12 slow reader",
        }
    }

    /// Whether `--only` row `number` (as printed) selects this one.
    pub fn is_row(self, number: u32) -> bool {
        match self {
            Kind::StartResponse => number == 1,
            Kind::StartExited => number == 2,
            Kind::RoundTrip => number == 3,
            Kind::Notifications => number == 4,
            Kind::PipelinedStarts => (5..=7).contains(&number),
            Kind::Pty => number == 8,
            Kind::LongPoll => number == 9,
            Kind::Concurrent => number == 10,
            Kind::Sessions => number == 11,
            Kind::SlowReader => number == 12,
        }
    }

    /// The transports the row runs on (stdio has no resume and no second connection).
    pub fn transports(self) -> &'static [Transport] {
        match self {
            Kind::Concurrent | Kind::Sessions | Kind::SlowReader => &[Transport::WebSocket],
            _ => &[Transport::WebSocket, Transport::Stdio],
        }
    }

    pub async fn run(
        self,
        plan: &Plan,
        implementation: &Implementation,
        transport: Transport,
    ) -> Result<Vec<Row>> {
        let target = Target {
            implementation,
            transport,
        };
        match self {
            Kind::StartResponse => latency::start_response(plan, &target).await,
            Kind::StartExited => latency::start_exited(plan, &target).await,
            Kind::RoundTrip => latency::round_trip(plan, &target).await,
            Kind::Notifications => throughput::notifications(plan, &target, false).await,
            Kind::Pty => throughput::notifications(plan, &target, true).await,
            Kind::LongPoll => throughput::long_poll(plan, &target).await,
            Kind::PipelinedStarts => scale::pipelined(plan, &target).await,
            Kind::Concurrent => scale::concurrent(plan, &target).await,
            Kind::Sessions => memory::sessions(plan, &target).await,
            Kind::SlowReader => memory::slow_reader(plan, &target).await,
        }
    }
}

/// The implementation and transport a row runs against.
pub struct Target<'a> {
    pub implementation: &'a Implementation,
    pub transport: Transport,
}

impl Target<'_> {
    /// A row for this target.
    pub fn row(&self, name: &str, unit: &str) -> Row {
        Row::new(name, self.transport.name(), &self.implementation.name, unit)
    }

    /// A fresh server (with `extra` options if it is ours) and an open session on it.
    pub async fn start(&self, extra: &[&str]) -> Result<(Server, Session)> {
        let mut server = Server::start(self.implementation, self.transport, extra)?;
        let conn = match (&server.url, server.pipes.take()) {
            (_, Some((stdin, stdout))) => Conn::lines(stdin, stdout)?,
            (Some(url), None) => Conn::websocket(url).await?,
            (None, None) => anyhow::bail!("the server has neither a url nor pipes"),
        };
        let session = Session::open(conn, None).await?;
        Ok((server, session))
    }

    /// A process start in `/` with just `PATH` in its environment.
    pub fn start_params(&self, id: &str, argv: &[&str]) -> StartParams {
        let mut params = StartParams::new(id, argv.iter().copied(), self.implementation.root_dir());
        params.env.insert("PATH".into(), "/usr/bin:/bin".into());
        params
    }
}

pub fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
