//! `fs/walk` (docs/protocol.md §0, revision 2026-08) over both transports: breadth-first
//! order with each directory sorted by name, depth and the two truncating limits, the
//! maximums, link rules, hidden pruning, unreadable directories, `file:` results, and
//! `--fs-root` confinement.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;
use exec_server_harness::{Connection, ExecServer, HarnessError, Transport};
use serde_json::{json, Value};

fn options(max_depth: u64, follow: bool) -> Value {
    json!({"maxDepth": max_depth, "maxDirectories": 10_000, "maxEntries": 50_000,
           "followDirectorySymlinks": follow})
}

/// `top/`: `.hidden/h.txt`, `a.txt`, `b/c.txt`, `b/d/e.txt`, `b/up -> ..`, `fifo`,
/// `link_dir -> b`, `link_file -> a.txt`, `broken -> nowhere`, `loop -> .`.
fn tree(top: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(top.join(".hidden"))?;
    std::fs::write(top.join(".hidden/h.txt"), "h")?;
    std::fs::write(top.join("a.txt"), "a")?;
    std::fs::create_dir_all(top.join("b/d"))?;
    std::fs::write(top.join("b/c.txt"), "c")?;
    std::fs::write(top.join("b/d/e.txt"), "e")?;
    symlink("..", top.join("b/up"))?;
    let status = std::process::Command::new("mkfifo")
        .arg(top.join("fifo"))
        .status()?;
    assert!(status.success(), "mkfifo");
    symlink("b", top.join("link_dir"))?;
    symlink("a.txt", top.join("link_file"))?;
    symlink("nowhere", top.join("broken"))?;
    symlink(".", top.join("loop"))?;
    Ok(())
}

/// A connection to a fresh server and a [`tree`] named `name` in a new temporary
/// directory (kept alive by the guard), with its path.
async fn ready_with_tree(
    transport: Transport,
    name: &str,
) -> Result<(Connection, tempfile::TempDir, String), HarnessError> {
    let conn = ready(transport, &[]).await?;
    let dir = tempfile::tempdir()?;
    let top = dir.path().join(name);
    tree(&top)?;
    Ok((conn, dir, p(&top)))
}

/// The direct children of a [`tree`].
const TOP_CHILDREN: [(&str, &str); 4] = [
    (".hidden", "directory"),
    ("a.txt", "file"),
    ("b", "directory"),
    ("fifo", "other"),
];

async fn walk(conn: &Connection, path: &str, options: Value) -> Result<Value, HarnessError> {
    conn.request("fs/walk", json!({"path": path, "options": options}))
        .result()
        .await
}

/// `(path relative to top, kind)` of each entry, in order.
fn listed(result: &Value, top: &str) -> Vec<(String, String)> {
    result["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| {
            let path = entry["path"].as_str().expect("path");
            let relative = path
                .strip_prefix(top)
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or_else(|| panic!("{path} is not under {top}"));
            (
                relative.to_owned(),
                entry["kind"].as_str().expect("kind").to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(path, kind)| (path.to_string(), kind.to_string()))
        .collect()
}

#[tokio::test]
async fn breadth_first_sorted_links_to_files_omitted_specials_are_other() -> TestResult {
    for transport in BOTH {
        let (conn, _dir, top) = ready_with_tree(transport, "top").await?;
        let result = walk(&conn, &top, options(64, false)).await?;
        assert_eq!(
            listed(&result, &top),
            pairs(&[
                (".hidden", "directory"),
                ("a.txt", "file"),
                ("b", "directory"),
                ("fifo", "other"),
                (".hidden/h.txt", "file"),
                ("b/c.txt", "file"),
                ("b/d", "directory"),
                ("b/d/e.txt", "file"),
            ]),
            "{transport:?}: no link is listed without followDirectorySymlinks"
        );
        assert_eq!(result["truncated"], false, "{transport:?}");
        assert_eq!(result["errors"], json!([]), "{transport:?}");
    }
    Ok(())
}

#[tokio::test]
async fn followed_directory_links_are_listed_and_entered_and_cycles_end() -> TestResult {
    for transport in BOTH {
        let (conn, _dir, top) = ready_with_tree(transport, "top").await?;
        let result = walk(&conn, &top, options(64, true)).await?;
        // `loop -> .` and `b/up -> ..` lead back to an ancestor: listed, never entered;
        // `link_file` and `broken` are omitted.
        assert_eq!(
            listed(&result, &top),
            pairs(&[
                (".hidden", "directory"),
                ("a.txt", "file"),
                ("b", "directory"),
                ("fifo", "other"),
                ("link_dir", "directory"),
                ("loop", "directory"),
                (".hidden/h.txt", "file"),
                ("b/c.txt", "file"),
                ("b/d", "directory"),
                ("b/up", "directory"),
                ("link_dir/c.txt", "file"),
                ("link_dir/d", "directory"),
                ("link_dir/up", "directory"),
                ("b/d/e.txt", "file"),
                ("link_dir/d/e.txt", "file"),
            ]),
            "{transport:?}"
        );
        assert_eq!(result["truncated"], false, "{transport:?}");
    }
    Ok(())
}

#[tokio::test]
async fn depth_hidden_pruning_and_file_uri_results() -> TestResult {
    for transport in BOTH {
        let (conn, _dir, plain) = ready_with_tree(transport, "top dir").await?;
        // maxDepth 1: the direct children only; 0: nothing.
        let result = walk(&conn, &plain, options(1, false)).await?;
        assert_eq!(
            listed(&result, &plain),
            pairs(&TOP_CHILDREN),
            "{transport:?}"
        );
        assert_eq!(
            result["truncated"], false,
            "{transport:?}: depth does not truncate"
        );
        let result = walk(&conn, &plain, options(0, false)).await?;
        assert_eq!(result["entries"], json!([]), "{transport:?}");
        // Hidden directories are listed but not entered.
        let mut pruned = options(64, false);
        pruned["pruneHiddenDirectories"] = json!(true);
        let result = walk(&conn, &plain, pruned).await?;
        let names = listed(&result, &plain);
        assert!(
            names.contains(&(".hidden".into(), "directory".into())),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|(path, _)| path.starts_with(".hidden/")),
            "{names:?}"
        );
        assert!(
            names.contains(&("b/d/e.txt".into(), "file".into())),
            "{names:?}"
        );
        // A file: URI request gets file: URI results, percent-encoded.
        let uri = format!("file://{}", plain.replace(' ', "%20"));
        let result = walk(&conn, &uri, options(1, false)).await?;
        assert_eq!(listed(&result, &uri), pairs(&TOP_CHILDREN), "{transport:?}");
    }
    Ok(())
}

#[tokio::test]
async fn max_entries_and_max_directories_truncate() -> TestResult {
    for transport in BOTH {
        let (conn, _dir, top) = ready_with_tree(transport, "top").await?;
        let limited = |entries: u64, directories: u64| {
            json!({"maxDepth": 64, "maxDirectories": directories, "maxEntries": entries,
                   "followDirectorySymlinks": false})
        };
        let result = walk(&conn, &top, limited(3, 100)).await?;
        assert_eq!(
            listed(&result, &top),
            pairs(&[
                (".hidden", "directory"),
                ("a.txt", "file"),
                ("b", "directory")
            ]),
            "{transport:?}"
        );
        assert_eq!(result["truncated"], true, "{transport:?}");
        // Exactly as many entries as there are is not truncated.
        let result = walk(&conn, &top, limited(8, 100)).await?;
        assert_eq!(listed(&result, &top).len(), 8, "{transport:?}");
        assert_eq!(result["truncated"], false, "{transport:?}");
        // One directory read: the top's children only, and more was left.
        let result = walk(&conn, &top, limited(100, 1)).await?;
        assert_eq!(listed(&result, &top).len(), 4, "{transport:?}");
        assert_eq!(result["truncated"], true, "{transport:?}");
        // top, .hidden, b, b/d: four directories are all there are.
        let result = walk(&conn, &top, limited(100, 4)).await?;
        assert_eq!(listed(&result, &top).len(), 8, "{transport:?}");
        assert_eq!(result["truncated"], false, "{transport:?}");
    }
    Ok(())
}

#[tokio::test]
async fn limits_above_upstreams_maximums_and_bad_requests_are_refused() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let top = dir.path().to_string_lossy().into_owned();
        let at_most = json!({"maxDepth": 64, "maxDirectories": 10_000, "maxEntries": 50_000,
                             "followDirectorySymlinks": true});
        walk(&conn, &top, at_most.clone()).await?;
        for (field, value) in [
            ("maxDepth", 65),
            ("maxDirectories", 10_001),
            ("maxEntries", 50_001),
        ] {
            let mut options = at_most.clone();
            options[field] = json!(value);
            let error = failure(&conn, "fs/walk", json!({"path": top, "options": options})).await?;
            assert_eq!(
                error.code, INVALID_REQUEST,
                "{transport:?} {field}: {error:?}"
            );
            assert!(error.message.contains(field), "{error:?}");
        }
        let error = failure(&conn, "fs/walk", json!({"path": top})).await?;
        assert_eq!(
            error.code, INVALID_PARAMS,
            "{transport:?}: options are required"
        );
        let missing = format!("{top}/missing");
        let error = failure(
            &conn,
            "fs/walk",
            json!({"path": missing, "options": at_most}),
        )
        .await?;
        assert_eq!(error.code, NOT_FOUND, "{transport:?}: {error:?}");
        let error = failure(
            &conn,
            "fs/walk",
            json!({"path": "relative", "options": at_most}),
        )
        .await?;
        assert_eq!(error.code, INVALID_PARAMS, "{transport:?}: {error:?}");
    }
    Ok(())
}

#[tokio::test]
async fn an_unreadable_subdirectory_is_an_error_and_the_walk_goes_on() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    // Root reads a mode-000 directory anyway, so as root the server runs as `nobody`
    // (setpriv, util-linux): the directory must be unreadable to the server.
    let as_root = unsafe { libc::geteuid() } == 0;
    for transport in BOTH {
        let server = if as_root {
            ExecServer::builder()
                .command([
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    env!("CARGO_BIN_EXE_exec-server"),
                ])
                .transport(transport)
                .start()
                .await?
        } else {
            start_server(transport, &[]).await?
        };
        let conn = server.connect().await?;
        conn.initialize(CLIENT).await?;
        let dir = tempfile::tempdir()?;
        // Traversable by `nobody`.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let top = dir.path().join("top");
        std::fs::create_dir_all(top.join("locked/inner"))?;
        std::fs::create_dir_all(top.join("open"))?;
        std::fs::write(top.join("open/x"), "x")?;
        std::fs::set_permissions(top.join("locked"), std::fs::Permissions::from_mode(0o000))?;
        let plain = top.to_string_lossy().into_owned();
        let result = walk(&conn, &plain, options(64, false)).await;
        std::fs::set_permissions(top.join("locked"), std::fs::Permissions::from_mode(0o755))?;
        let result = result?;
        assert_eq!(
            listed(&result, &plain),
            pairs(&[
                ("locked", "directory"),
                ("open", "directory"),
                ("open/x", "file")
            ]),
            "{transport:?}"
        );
        let errors = result["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{transport:?}: {errors:?}");
        assert_eq!(errors[0]["path"], format!("{plain}/locked"));
        assert!(
            errors[0]["message"]
                .as_str()
                .is_some_and(|message| message.contains("ermission denied")),
            "{errors:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn under_fs_root_links_leading_out_are_neither_listed_nor_entered() -> TestResult {
    for transport in BOTH {
        let dir = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("secret"), "s")?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("inside/sub"))?;
        std::fs::write(root.join("inside/sub/f"), "f")?;
        symlink(outside.path(), root.join("out_absolute"))?;
        symlink("../../..", root.join("inside/out_relative"))?;
        symlink("inside/sub", root.join("in"))?;
        let root_text = std::fs::canonicalize(&root)?.to_string_lossy().into_owned();
        let conn = ready(transport, &["--fs-root", &root_text]).await?;
        let result = walk(&conn, &root_text, options(64, true)).await?;
        assert_eq!(
            listed(&result, &root_text),
            pairs(&[
                ("in", "directory"),
                ("inside", "directory"),
                ("in/f", "file"),
                ("inside/sub", "directory"),
                ("inside/sub/f", "file"),
            ]),
            "{transport:?}: links leaving the root are treated as broken"
        );
        let error = failure(
            &conn,
            "fs/walk",
            json!({"path": outside.path(), "options": options(64, true)}),
        )
        .await?;
        assert_eq!(error.code, INVALID_REQUEST, "{transport:?}: {error:?}");
        let escape = format!("{root_text}/out_absolute");
        let error = failure(
            &conn,
            "fs/walk",
            json!({"path": escape, "options": options(64, true)}),
        )
        .await?;
        assert_eq!(error.code, INVALID_REQUEST, "{transport:?}: {error:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_wide_directory_is_cut_to_the_first_names_in_byte_order() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        for n in (0..500).rev() {
            std::fs::write(dir.path().join(format!("f{n:04}")), "")?;
        }
        let top = dir.path().to_string_lossy().into_owned();
        let options = json!({"maxDepth": 1, "maxDirectories": 1, "maxEntries": 10,
                             "followDirectorySymlinks": false});
        let result = walk(&conn, &top, options).await?;
        let names: Vec<String> = listed(&result, &top).into_iter().map(|(p, _)| p).collect();
        let expected: Vec<String> = (0..10).map(|n| format!("f{n:04}")).collect();
        assert_eq!(names, expected, "{transport:?}");
        assert_eq!(result["truncated"], true, "{transport:?}");
    }
    Ok(())
}

/// Room for a walk's result is reserved before it walks (4 KiB per requested entry plus
/// 64 KiB); long paths that would not fit end the walk early, truncated.
#[tokio::test]
async fn a_result_that_would_outgrow_its_reserved_room_is_truncated() -> TestResult {
    let conn = ready(Transport::WebSocket, &[]).await?;
    let dir = tempfile::tempdir()?;
    // About 3.8 KB of path before each name, so each entry counts ≥ 6 × 4 KB.
    let mut top = dir.path().to_path_buf();
    for level in 0..15 {
        top.push(format!("{level:02}{}", "d".repeat(248)));
    }
    std::fs::create_dir_all(&top)?;
    for n in 0..10 {
        std::fs::write(top.join(format!("{n:02}{}", "f".repeat(200))), "x")?;
    }
    let plain = top.to_string_lossy().into_owned();
    let options = json!({"maxDepth": 1, "maxDirectories": 10, "maxEntries": 10,
                         "followDirectorySymlinks": false});
    let result = walk(&conn, &plain, options).await?;
    let listed = listed(&result, &plain);
    assert!(
        !listed.is_empty() && listed.len() < 10,
        "cut short by room, not by maxEntries: {} entries",
        listed.len()
    );
    assert_eq!(result["truncated"], true);
    Ok(())
}
