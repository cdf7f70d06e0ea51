//! Rows of results: what each row measured, printed as a table and written as JSON.

use serde::Serialize;

use crate::stats::{ratio, Summary};

/// How a row ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// The row did not finish within its time limit (a peer that deadlocks).
    Timeout,
    /// The row failed; the note says why.
    Error,
}

/// One measured row for one implementation on one transport.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub transport: String,
    pub implementation: String,
    pub unit: String,
    pub status: Status,
    pub server: Option<Summary>,
    pub floor: Option<Summary>,
    /// Server median ÷ floor median (> 1 is slower); `None` for absolute rows.
    pub ratio: Option<f64>,
    pub notes: String,
}

impl Row {
    pub fn new(name: &str, transport: &str, implementation: &str, unit: &str) -> Row {
        Row {
            name: name.into(),
            transport: transport.into(),
            implementation: implementation.into(),
            unit: unit.into(),
            status: Status::Ok,
            server: None,
            floor: None,
            ratio: None,
            notes: String::new(),
        }
    }

    /// Fills in the two sides and their ratio.
    pub fn measured(mut self, server: &[f64], floor: &[f64]) -> Row {
        self.server = Summary::of(server);
        self.floor = Summary::of(floor);
        self.ratio = match (&self.server, &self.floor) {
            (Some(s), Some(f)) => ratio(s, f),
            _ => None,
        };
        self
    }

    pub fn note(mut self, note: impl AsRef<str>) -> Row {
        if !self.notes.is_empty() {
            self.notes.push_str("; ");
        }
        self.notes.push_str(note.as_ref());
        self
    }

    pub fn failed(mut self, status: Status, why: impl AsRef<str>) -> Row {
        self.status = status;
        self.note(why)
    }
}

fn side(summary: &Option<Summary>) -> String {
    match summary {
        Some(s) => format!("{:.3} / {:.3} / {:.3}", s.min, s.median, s.p99),
        None => "-".into(),
    }
}

fn ratio_cell(row: &Row) -> String {
    match (&row.status, row.ratio) {
        (Status::Ok, Some(r)) => format!("{r:.2}×"),
        (Status::Ok, None) => "-".into(),
        (Status::Timeout, _) => "TIMEOUT".into(),
        (Status::Error, _) => "ERROR".into(),
    }
}

/// Prints one row as soon as it is measured.
pub fn print_row(row: &Row) {
    println!(
        "| {} | {} | {} | {} | server {} | floor {} | {} | {} |",
        row.name,
        row.transport,
        row.implementation,
        row.unit,
        side(&row.server),
        side(&row.floor),
        ratio_cell(row),
        row.notes
    );
}

/// The header matching [`print_row`].
pub fn print_header() {
    println!("| row | transport | implementation | unit | server min / median / p99 | floor min / median / p99 | ratio | notes |");
    println!("|---|---|---|---|---|---|---|---|");
}

/// Our ratios beside the peer's, matched by row name and transport.
pub fn print_comparison(rows: &[Row], ours: &str, peer: &str) {
    println!("\n| row | transport | {ours} | {peer} |");
    println!("|---|---|---|---|");
    for row in rows.iter().filter(|r| r.implementation == ours) {
        let other = rows.iter().find(|r| {
            r.implementation == peer && r.name == row.name && r.transport == row.transport
        });
        let cell = |r: &Row| match (r.ratio, &r.server) {
            (Some(_), _) | (None, None) => ratio_cell(r),
            (None, Some(s)) if r.status == Status::Ok => format!("{:.1} {}", s.median, r.unit),
            _ => ratio_cell(r),
        };
        println!(
            "| {} | {} | {} | {} |",
            row.name,
            row.transport,
            cell(row),
            other.map_or_else(|| "-".into(), cell)
        );
    }
}

/// Writes every row as a JSON array.
pub fn write_json(path: &std::path::Path, rows: &[Row]) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(rows)?;
    std::fs::write(path, text)?;
    Ok(())
}
