//! Rows 1–3: `process/start` → response, `process/start` → `process/exited`, and a
//! request round trip (`environment/info`) against a bare echo of the same frame.

use std::time::Instant;

use anyhow::{anyhow, Result};
use exec_protocol::{
    encode_request, Call as _, EnvironmentInfoParams, NotificationMethod, RequestId,
};

use super::{ms, Plan, Target};
use crate::client::{notification_for, Conn, Session};
use crate::floor::{self, StdioFloor};
use crate::report::Row;
use crate::server::Transport;

pub async fn start_response(plan: &Plan, target: &Target<'_>) -> Result<Vec<Row>> {
    let (_server, mut session) = target.start(&[]).await?;
    let per_round = plan.pick(20, 50);
    let (mut server, mut bare) = (Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        for _ in 0..per_round {
            bare.push(ms(floor::spawn_returns(&["/bin/true"]).await?));
        }
        for i in 0..per_round {
            let params = target.start_params(&format!("t{round}-{i}"), &["/bin/true"]);
            let started = Instant::now();
            session.call(&params).await?;
            server.push(ms(started.elapsed()));
        }
    }
    let row = target.row(super::Kind::StartResponse.name(), "ms");
    Ok(vec![row
        .measured(&server, &bare)
        .note("floor: tokio Command::spawn returns")])
}

pub async fn start_exited(plan: &Plan, target: &Target<'_>) -> Result<Vec<Row>> {
    let (_server, mut session) = target.start(&[]).await?;
    let per_round = plan.pick(20, 50);
    let (mut server, mut bare) = (Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        for _ in 0..per_round {
            bare.push(ms(floor::spawn_and_wait(&["/bin/true"]).await?));
        }
        for i in 0..per_round {
            let id = format!("e{round}-{i}");
            let params = target.start_params(&id, &["/bin/true"]);
            let started = Instant::now();
            session.feed(&params).await?;
            session.conn.flush().await?;
            wait_exited(&mut session, &id).await?;
            server.push(ms(started.elapsed()));
        }
    }
    let row = target.row(super::Kind::StartExited.name(), "ms");
    Ok(vec![row
        .measured(&server, &bare)
        .note("floor: spawn + wait")])
}

async fn wait_exited(session: &mut Session, id: &str) -> Result<()> {
    loop {
        let message = session.next().await?;
        if let Some(params) = notification_for(&message, NotificationMethod::ProcessExited) {
            if params.get("processId").and_then(|v| v.as_str()) == Some(id) {
                return Ok(());
            }
        }
    }
}

pub async fn round_trip(plan: &Plan, target: &Target<'_>) -> Result<Vec<Row>> {
    let (_server, mut session) = target.start(&[]).await?;
    let per_round = plan.pick(100, 300);
    let mut echo = match target.transport {
        Transport::WebSocket => Echo::Ws(Conn::websocket(&plan.ws_floor_url).await?),
        Transport::Stdio => Echo::Stdio(StdioFloor::start(&["echo"])?),
    };
    let (mut server, mut bare) = (Vec::new(), Vec::new());
    let frame = encode_request(
        &RequestId::from(7),
        EnvironmentInfoParams::METHOD.as_str(),
        &EnvironmentInfoParams {},
    );
    for _ in 0..plan.rounds {
        let conn = echo.conn()?;
        for _ in 0..per_round {
            let started = Instant::now();
            conn.send(frame.clone()).await?;
            let back = conn.recv().await?;
            let _ = exec_protocol::classify(&back);
            bare.push(ms(started.elapsed()));
        }
        for _ in 0..per_round {
            let started = Instant::now();
            session.call(&EnvironmentInfoParams {}).await?;
            server.push(ms(started.elapsed()));
        }
    }
    echo.stop().await;
    let row = target.row(super::Kind::RoundTrip.name(), "ms");
    Ok(vec![row
        .measured(&server, &bare)
        .note("floor: bare echo of the same frame")])
}

enum Echo {
    Ws(Conn),
    Stdio(StdioFloor),
}

impl Echo {
    fn conn(&mut self) -> Result<&mut Conn> {
        match self {
            Echo::Ws(conn) => Ok(conn),
            Echo::Stdio(helper) => helper.conn.as_mut().ok_or_else(|| anyhow!("helper closed")),
        }
    }

    async fn stop(self) {
        match self {
            Echo::Ws(conn) => conn.close().await,
            Echo::Stdio(helper) => helper.stop().await,
        }
    }
}
