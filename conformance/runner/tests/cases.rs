//! Static checks of the shipped cases, without a server: every transcript parses, has
//! an explicit `level`, and cites a section that exists in `docs/protocol.md`; the
//! suite keeps at least 70 cases and the four the project was asked for by name.

use std::collections::BTreeSet;
use std::path::Path;

use conformance_runner::runner::{discover, load};
use conformance_runner::transcript::protocol_sections;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate is conformance/runner in the workspace")
}

#[test]
fn every_case_parses_and_cites_a_real_section_with_a_level() {
    let protocol = std::fs::read_to_string(workspace().join("docs/protocol.md")).unwrap();
    let sections = protocol_sections(&protocol);
    assert!(
        sections.contains("§6.1") && sections.contains("§9"),
        "{sections:?}"
    );
    let cases = discover(&workspace().join("fixtures/transcripts"));
    let mut problems = Vec::new();
    for (id, path) in &cases {
        match load(path) {
            Err(error) => problems.push(error),
            Ok(case) => {
                if !sections.contains(&case.spec) {
                    problems.push(format!(
                        "{id}: spec {} is no section of docs/protocol.md",
                        case.spec
                    ));
                }
                let source = std::fs::read_to_string(path).unwrap();
                if !source.lines().any(|line| line.starts_with("# level: ")) {
                    problems.push(format!("{id}: no `# level:` header"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(cases.len() >= 70, "only {} cases", cases.len());
}

#[test]
fn the_cases_asked_for_by_name_are_there() {
    let ids: BTreeSet<String> = discover(&workspace().join("fixtures/transcripts"))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for wanted in [
        "session/resume-after-disconnect",
        "session/resume-within-ttl",
        "session/resume-after-ttl-fails",
        "malformed/line-gets-error-and-stays-open",
        "stdio/client-gone-terminates-children",
    ] {
        assert!(ids.contains(wanted), "missing case {wanted}");
    }
}
