//! Embeds every transcript under `fixtures/transcripts/` in the standalone
//! `exec-conformance` binary, so that it runs without a checkout of this repository.

use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/transcripts");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut found = Vec::new();
    collect(&root, &root, &mut found);
    found.sort();
    let mut out = String::from(
        "/// Every shipped case: `(id, transcript)`.\npub static CASES: &[(&str, &str)] = &[\n",
    );
    for (id, path) in &found {
        println!("cargo:rerun-if-changed={}", path.display());
        out.push_str(&format!(
            "    ({id:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("];\n");
    let target = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(target.join("embedded.rs"), out).expect("OUT_DIR is writable");
}

fn collect(root: &Path, dir: &Path, found: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).expect("fixtures/transcripts is readable");
    for entry in entries.flatten() {
        let path = entry.path();
        println!("cargo:rerun-if-changed={}", path.display());
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect(root, &path, found);
        } else if path.extension().is_some_and(|ext| ext == "xt") {
            let id = path
                .strip_prefix(root)
                .expect("below the root")
                .with_extension("")
                .to_string_lossy()
                .replace('\\', "/");
            let path = path.canonicalize().expect("an existing file");
            found.push((id, path));
        }
    }
}
