//! [`Inbox`]: everything received on one connection and not yet consumed, filed by
//! `exec_protocol::classify` into responses (by id), events and invalid frames.

use std::collections::{HashMap, VecDeque};

use exec_protocol::{Message, RequestId, classify};

use crate::event::Event;
use crate::response::Response;
use crate::trace::abbreviate;

#[derive(Default)]
pub(crate) struct Inbox {
    /// Responses by id (`None`: `id: null`); a queue because several may share one.
    pub responses: HashMap<Option<RequestId>, VecDeque<Response>>,
    pub events: VecDeque<Event>,
    /// Frames that were not messages a server may send (a protocol violation).
    pub invalid: Vec<String>,
    pub disconnected: bool,
    /// Method names of requests sent through the harness and not answered yet, for
    /// error messages.
    pub sent: HashMap<RequestId, String>,
    /// Responses filed so far (each response's arrival number).
    pub arrivals: u64,
}

impl Inbox {
    /// Files one text frame.
    pub fn file(&mut self, text: String) {
        match classify(&text) {
            Message::Notification { method, params } => self.events.push_back(Event {
                method,
                params,
                raw: text,
            }),
            Message::Response { id, result } => {
                self.push_response(Some(id), Some(result), None, text)
            }
            Message::Error { id, error } => self.push_response(id, None, Some(error), text),
            Message::Request { .. } | Message::Invalid { .. } => self.invalid.push(text),
        }
    }

    fn push_response(
        &mut self,
        id: Option<RequestId>,
        result: Option<serde_json::Value>,
        error: Option<exec_protocol::ErrorObject>,
        raw: String,
    ) {
        let method = id.as_ref().and_then(|id| self.sent.remove(id));
        self.arrivals += 1;
        let response = Response {
            arrival: self.arrivals,
            id: id.clone(),
            method,
            result,
            error,
            raw,
            report: Default::default(),
        };
        self.responses.entry(id).or_default().push_back(response);
    }

    /// Takes the oldest response with this id.
    pub fn take_response(&mut self, id: &Option<RequestId>) -> Option<Response> {
        let queue = self.responses.get_mut(id)?;
        let response = queue.pop_front();
        if queue.is_empty() {
            self.responses.remove(id);
        }
        response
    }

    /// Takes the oldest response (by arrival, among the oldest of each id) whose id
    /// satisfies `wanted`.
    pub fn take_response_where(
        &mut self,
        wanted: &dyn Fn(Option<&RequestId>) -> bool,
    ) -> Option<Response> {
        let id = self
            .responses
            .iter()
            .filter(|(id, _)| wanted(id.as_ref()))
            .filter_map(|(id, queue)| Some((queue.front()?.arrival, id.clone())))
            .min_by_key(|(arrival, _)| *arrival)
            .map(|(_, id)| id)?;
        self.take_response(&id)
    }

    /// What arrived and was not consumed, for a timeout message.
    pub fn summary(&self) -> String {
        let mut arrived: Vec<String> = self
            .events
            .iter()
            .take(20)
            .map(ToString::to_string)
            .collect();
        if self.events.len() > 20 {
            arrived.push(format!("… and {} more events", self.events.len() - 20));
        }
        arrived.extend(
            self.responses
                .values()
                .flatten()
                .take(10)
                .map(|response| format!("response {}", abbreviate(&response.raw, 200))),
        );
        arrived.extend(
            self.invalid
                .iter()
                .map(|frame| format!("invalid frame {}", abbreviate(frame, 200))),
        );
        if arrived.is_empty() {
            "nothing".to_owned()
        } else {
            arrived.join("; ")
        }
    }
}
