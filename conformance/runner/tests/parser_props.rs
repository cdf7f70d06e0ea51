//! The transcript parser never panics: whatever a line holds after random edits of the
//! shipped cases (inserted, deleted or replaced characters, including the transcript
//! language's own punctuation), it returns a transcript or a positioned error.

use std::path::Path;

use conformance_runner::runner::discover;
use conformance_runner::transcript::parse;
use proptest::prelude::*;

fn shipped() -> &'static [String] {
    static CASES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    CASES.get_or_init(read_shipped)
}

fn read_shipped() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate is conformance/runner in the workspace")
        .join("fixtures/transcripts");
    discover(&root)
        .into_iter()
        // The 2 000-line case only slows the search down.
        .filter(|(id, _)| !id.contains("pipelined-500"))
        .map(|(_, path)| std::fs::read_to_string(path).expect("readable case"))
        .collect()
}

/// Characters the language gives meaning to, and a few that break UTF-8 boundaries.
fn character() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec![
            '$', '{', '}', '[', ']', '"', ':', ',', '#', '>', '<', '~', '!', '/', '\\', '%', '*',
            ' ', '\n', '0', '9', 'e', '-', '.', 'é', '€', '𝄞',
        ]),
        any::<char>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn edited_transcripts_parse_or_fail_with_a_position(
        case in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, character()), 1..6),
    ) {
        let cases = shipped();
        let mut text: Vec<char> = cases[case.index(cases.len())].chars().collect();
        for (at, kind, c) in edits {
            let at = at.index(text.len() + 1);
            match kind {
                0 => text.insert(at, c),
                1 if at < text.len() => { text.remove(at); }
                _ if at < text.len() => text[at] = c,
                _ => text.push(c),
            }
        }
        let text: String = text.into_iter().collect();
        if let Err(error) = parse("edited.xt", &text) {
            prop_assert!(error.line >= 1 && error.column >= 1, "{error}");
            prop_assert!(error.line <= text.lines().count().max(1), "{error}");
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = parse("any.xt", &text);
    }
}
