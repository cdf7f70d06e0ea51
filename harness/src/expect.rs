//! Waiting for events on a [`Connection`]: the next one, the first matching one
//! ([`EventWait`]), none for a while, or a condition over everything buffered.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use crate::connection::Connection;
use crate::error::{HarnessError, Result};
use crate::event::Event;

impl Connection {
    /// The next unconsumed event, whatever it is.
    pub async fn next_event(&self) -> Result<Event> {
        self.expect_event(|_| true).described("any event").await
    }

    /// Waits for the first unconsumed event matching `predicate` and removes it from
    /// the buffer; events before it stay buffered. Add `.within(d)` to change the
    /// deadline.
    pub fn expect_event<P>(&self, predicate: P) -> EventWait<'_, P>
    where
        P: Fn(&Event) -> bool + Send + Sync,
    {
        EventWait {
            connection: self,
            predicate,
            within: self.default_wait(),
            discard_others: false,
            description: "an event matching the predicate".into(),
        }
    }

    /// Like [`expect_event`](Self::expect_event) but discards every event before the match.
    pub fn skip_until<P>(&self, predicate: P) -> EventWait<'_, P>
    where
        P: Fn(&Event) -> bool + Send + Sync,
    {
        EventWait {
            discard_others: true,
            ..self.expect_event(predicate)
        }
    }

    /// Fails if any unconsumed event is buffered or arrives within the logical
    /// `window` (× the time scale).
    pub async fn expect_no_event(&self, window: Duration) -> Result<()> {
        let window = self.scaled(window);
        let found = self
            .wait_for("quiet", window, |inbox| inbox.events.front().cloned())
            .await;
        match found {
            Ok(event) => Err(HarnessError::Protocol {
                message: format!("expected no event for {window:?}, got {event}"),
                report: self.report(),
            }),
            Err(HarnessError::Timeout { .. }) | Err(HarnessError::Disconnected { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Every response received and not yet consumed, oldest first (not consumed).
    pub fn buffered_responses(&self) -> Vec<crate::Response> {
        let mut responses: Vec<crate::Response> =
            self.inbox().responses.values().flatten().cloned().collect();
        responses.sort_by_key(|response| response.arrival);
        responses
    }

    /// Whether the connection is still open: neither side has closed it (as far as
    /// anything read so far shows).
    pub fn is_open(&self) -> bool {
        !self.inbox().disconnected
    }

    /// Reads whatever arrives within the logical `window` (× the time scale), consuming
    /// nothing, and returns early once the connection is closed (then `true`). After a
    /// server exits, this reads what it wrote to its end.
    pub async fn drain(&self, window: Duration) -> bool {
        self.wait_for("the connection to close", self.scaled(window), |inbox| {
            inbox.disconnected.then_some(())
        })
        .await
        .is_ok()
    }

    /// Every event buffered so far, in arrival order (not consumed).
    pub fn buffered_events(&self) -> Vec<Event> {
        self.inbox().events.iter().cloned().collect()
    }

    /// Waits (default deadline) until the buffered events satisfy `done`; returns them
    /// all (nothing is consumed).
    pub async fn wait_for_events(
        &self,
        description: &str,
        done: impl Fn(&VecDeque<Event>) -> bool,
    ) -> Result<Vec<Event>> {
        self.wait_for_events_for(description, self.default_wait(), done)
            .await
    }

    /// Like [`wait_for_events`](Self::wait_for_events) with a logical deadline (× the
    /// time scale).
    pub async fn wait_for_events_within(
        &self,
        description: &str,
        within: Duration,
        done: impl Fn(&VecDeque<Event>) -> bool,
    ) -> Result<Vec<Event>> {
        self.wait_for_events_for(description, self.scaled(within), done)
            .await
    }

    async fn wait_for_events_for(
        &self,
        description: &str,
        within: Duration,
        done: impl Fn(&VecDeque<Event>) -> bool,
    ) -> Result<Vec<Event>> {
        self.wait_for(description, within, |inbox| {
            done(&inbox.events).then(|| inbox.events.iter().cloned().collect())
        })
        .await
    }
}

/// A pending wait for an event; `.await` it, optionally after [`within`](Self::within).
#[must_use = "an event wait does nothing unless awaited"]
pub struct EventWait<'a, P> {
    connection: &'a Connection,
    predicate: P,
    within: Duration,
    discard_others: bool,
    description: String,
}

impl<P> EventWait<'_, P> {
    /// Overrides the deadline with a logical duration (× the time scale).
    pub fn within(mut self, within: Duration) -> Self {
        self.within = self.connection.scaled(within);
        self
    }

    /// What the timeout error says was expected.
    pub fn described(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}

impl<'a, P> IntoFuture for EventWait<'a, P>
where
    P: Fn(&Event) -> bool + Send + Sync + 'a,
{
    type Output = Result<Event>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Event>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let EventWait {
                connection,
                predicate,
                within,
                discard_others,
                description,
            } = self;
            connection
                .wait_for(&description, within, |inbox| {
                    let index = inbox.events.iter().position(&predicate);
                    if discard_others {
                        let drop_count = index.unwrap_or(inbox.events.len());
                        inbox.events.drain(..drop_count);
                        return index.and_then(|_| inbox.events.pop_front());
                    }
                    index.and_then(|index| inbox.events.remove(index))
                })
                .await
        })
    }
}
