//! Static checks of `fixtures/negative-controls.toml`, without building the `faults`
//! feature or running a server (the `.ci/run` step `scripts/negative-controls.py` runs
//! the faults): its faults are exactly those of `server/src/faults.rs`, every case it
//! lists exists (on the transport it names), every case family has a fault, and its
//! `uncovered` list is exactly the cases no fault lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use conformance_runner::runner::{discover, load};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate is conformance/runner in the workspace")
}

/// The fault names of `server/src/faults.rs`: each entry of its `FAULTS` table starts
/// `(Fault::X, "name",` (rustfmt may break the line after the name).
fn fault_names_in_source() -> BTreeSet<String> {
    let source = std::fs::read_to_string(workspace().join("server/src/faults.rs")).unwrap();
    let (_, table) = source
        .split_once("pub const FAULTS")
        .expect("server/src/faults.rs has its FAULTS table");
    let (table, _) = table.split_once("];").expect("the table ends");
    let entry = regex::Regex::new(r#"\(\s*Fault::\w+,\s*"([a-z0-9-]+)","#).unwrap();
    entry
        .captures_iter(table)
        .map(|captures| captures[1].to_owned())
        .collect()
}

struct Controls {
    faults: BTreeMap<String, Vec<String>>,
    uncovered: Vec<String>,
}

fn controls() -> Controls {
    let path = workspace().join("fixtures/negative-controls.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let strings = |value: &toml::Value, what: &str| -> Vec<String> {
        value
            .as_array()
            .unwrap_or_else(|| panic!("{what}: not a list"))
            .iter()
            .map(|item| {
                item.as_str()
                    .unwrap_or_else(|| panic!("{what}: {item} is not a string"))
                    .to_owned()
            })
            .collect()
    };
    let faults = table
        .get("faults")
        .and_then(toml::Value::as_table)
        .expect("a [faults] table")
        .iter()
        .map(|(name, cases)| (name.clone(), strings(cases, name)))
        .collect();
    let uncovered = table
        .get("uncovered")
        .and_then(|uncovered| uncovered.get("cases"))
        .expect("an [uncovered] table with `cases`");
    let uncovered = strings(uncovered, "uncovered.cases");
    for key in table.keys() {
        assert!(
            key == "faults" || key == "uncovered",
            "unknown key {key} in {}",
            path.display()
        );
    }
    Controls { faults, uncovered }
}

#[test]
fn negative_controls_name_real_faults_and_cases_and_cover_every_family() {
    let controls = controls();
    let source_names = fault_names_in_source();
    assert!(source_names.len() >= 20, "{source_names:?}");
    let listed_names: BTreeSet<String> = controls.faults.keys().cloned().collect();
    assert_eq!(
        listed_names, source_names,
        "the faults of fixtures/negative-controls.toml and of server/src/faults.rs differ"
    );

    let cases: BTreeMap<String, _> = discover(&workspace().join("fixtures/transcripts"))
        .into_iter()
        .collect();
    let mut problems = Vec::new();
    let mut covered = BTreeSet::new();
    let mut families_with_a_fault = BTreeSet::new();
    for (fault, entries) in &controls.faults {
        if entries.is_empty() {
            problems.push(format!("{fault}: no case listed"));
        }
        let mut seen = BTreeSet::new();
        for entry in entries {
            if !seen.insert(entry) {
                problems.push(format!("{fault}: {entry} listed twice"));
            }
            // `ws/family/name` or `family/name` (`stdio` is a family too: the slashes
            // tell them apart).
            let (transport, id) = match entry.split_once('/') {
                Some((head, rest)) if rest.contains('/') => (Some(head), rest),
                _ => (None, entry.as_str()),
            };
            if transport.is_some_and(|head| head != "ws" && head != "stdio") {
                problems.push(format!("{fault}: {entry}: no such transport"));
                continue;
            }
            let Some(path) = cases.get(id) else {
                problems.push(format!("{fault}: {entry}: no such case"));
                continue;
            };
            let case = load(path).unwrap();
            if let Some(transport) = transport {
                if !case.transports.iter().any(|t| t.as_str() == transport) {
                    problems.push(format!(
                        "{fault}: {entry}: the case does not run on {transport}"
                    ));
                }
            }
            covered.insert(id.to_owned());
            if let Some((family, _)) = id.split_once('/') {
                families_with_a_fault.insert(family.to_owned());
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let families: BTreeSet<String> = cases
        .keys()
        .filter_map(|id| id.split_once('/').map(|(family, _)| family.to_owned()))
        .collect();
    let bare: Vec<&String> = families.difference(&families_with_a_fault).collect();
    assert!(
        bare.is_empty(),
        "case families no fault lists a case of: {bare:?}"
    );

    let expected: BTreeSet<String> = cases
        .keys()
        .filter(|id| !covered.contains(*id))
        .cloned()
        .collect();
    let uncovered: BTreeSet<String> = controls.uncovered.iter().cloned().collect();
    assert_eq!(
        uncovered.len(),
        controls.uncovered.len(),
        "a case listed twice in uncovered"
    );
    let missing: Vec<&String> = expected.difference(&uncovered).collect();
    let extra: Vec<&String> = uncovered.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "uncovered must be exactly the cases no fault lists: add {missing:?}, remove {extra:?}"
    );
    eprintln!(
        "negative controls: {} faults, {} of {} cases listed, {} uncovered",
        controls.faults.len(),
        covered.len(),
        cases.len(),
        uncovered.len()
    );
}

#[test]
fn the_fault_names_are_read_from_the_source() {
    let names = fault_names_in_source();
    for name in ["drop-output-chunk", "fs-escape-root", "serial-requests"] {
        assert!(names.contains(name), "{name} not found in {names:?}");
    }
}
