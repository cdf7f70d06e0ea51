//! Rows 1–3: `process/start` → response, `process/start` → `process/exited`, and a
//! request round trip (`environment/info`) against a bare echo of the same frame.

use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use exec_protocol::{
    encode_request, Call as _, EnvironmentInfoParams, Message, NotificationMethod, RequestId,
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
            let id = format!("t{round}-{i}");
            let params = target.start_params(&id, &["/bin/true"]);
            let started = Instant::now();
            let request = session.feed(&params).await?;
            session.conn.flush().await?;
            // Timed until the response; then, untimed, until the child's exit (which may
            // come first), as the floor waits for its child: the next start does not
            // share the machine with this child's run and exit.
            let (mut answered, mut exited) = (false, false);
            while !(answered && exited) {
                let message = session.next().await?;
                match &message {
                    Message::Response {
                        id: answered_id, ..
                    } if *answered_id == request => {
                        server.push(ms(started.elapsed()));
                        answered = true;
                    }
                    Message::Error {
                        id: Some(id),
                        error,
                    } if *id == request => {
                        bail!("process/start failed: {} {}", error.code, error.message)
                    }
                    _ => exited |= is_exited_of(&message, &id),
                }
            }
        }
    }
    let row = target.row(super::Kind::StartResponse.name(), "ms");
    Ok(vec![row
        .measured(&server, &bare)
        .note("floor: tokio Command::spawn returns; both sides wait, untimed, for the exit before the next start")])
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
    while !is_exited_of(&session.next().await?, id) {}
    Ok(())
}

fn is_exited_of(message: &Message, id: &str) -> bool {
    notification_for(message, NotificationMethod::ProcessExited)
        .is_some_and(|params| params.get("processId").and_then(|v| v.as_str()) == Some(id))
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
