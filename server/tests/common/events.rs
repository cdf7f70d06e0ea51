//! The events of a process started through the client library (`exec_client`).

use std::time::Duration;

use exec_client::{ProcessEvent, ProcessHandle, Stream};

/// How long [`all_events`] waits for a process's events to end.
const WAIT: Duration = Duration::from_secs(10);

/// Every event of `process` until `Closed` or `Failed`, within 10 s.
pub async fn all_events(process: &mut ProcessHandle) -> Vec<ProcessEvent> {
    let mut events = Vec::new();
    let collect = async {
        while let Some(event) = process.next_event().await {
            let last = matches!(
                event,
                ProcessEvent::Closed { .. } | ProcessEvent::Failed { .. }
            );
            events.push(event);
            if last {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .expect("the process's events end within the deadline");
    events
}

/// The stdout bytes among `events`, in order.
pub fn stdout_of(events: &[ProcessEvent]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|event| match event {
            ProcessEvent::Output {
                stream: Stream::Stdout,
                data,
                ..
            } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}
