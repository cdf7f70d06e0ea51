//! Protocol revisions (docs/protocol.md §0): the dated states of upstream's protocol
//! that a server may speak, advertised in `capabilities.revisions`.

/// A revision of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Revision {
    /// The seed's PR stack (June 2026).
    R2026_06,
    /// Upstream at 2026-08-22: `file:` URIs, `writeId`, streamed reads, `fs/walk`.
    R2026_08,
}

impl Revision {
    pub const ALL: [Revision; 2] = [Revision::R2026_06, Revision::R2026_08];

    pub const fn as_str(self) -> &'static str {
        match self {
            Revision::R2026_06 => "2026-06",
            Revision::R2026_08 => "2026-08",
        }
    }

    pub fn parse(text: &str) -> Option<Revision> {
        Revision::ALL
            .into_iter()
            .find(|revision| revision.as_str() == text)
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
