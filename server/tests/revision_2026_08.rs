//! Revision 2026-08 (docs/protocol.md §0), server side: `file:` URI paths next to plain
//! ones, `--require-file-uris`, `followSymlinks`, the codex-specific start fields,
//! `writeId` de-duplication, and the envelope's duplicate-key and value-count rules.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use common::*;
use exec_server_harness::protocol::PathForm;
use exec_server_harness::Transport;
use serde_json::{json, Value};

fn uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    PathForm::FileUri
        .render(path.as_os_str().as_bytes())
        .into_string()
}

/// A canonical temporary directory whose name has a space (percent-encoded in URIs).
fn spaced_dir() -> std::io::Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let base = std::fs::canonicalize(dir.path())?.join("a b");
    std::fs::create_dir(&base)?;
    Ok((dir, base))
}

#[tokio::test]
async fn every_fs_method_takes_file_uris_and_plain_paths() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let (_guard, base) = spaced_dir()?;
        let file = base.join("f x.txt");
        assert!(uri(&file).contains("a%20b/f%20x.txt"), "{}", uri(&file));
        for (form, spell) in [("uri", uri as fn(&Path) -> String), ("plain", p)] {
            let what = format!("{transport:?} {form}");
            conn.request(
                "fs/writeFile",
                json!({"path": spell(&file), "dataBase64": b64(b"hello")}),
            )
            .result()
            .await?;
            assert_eq!(std::fs::read(&file)?, b"hello", "{what}");
            let read = conn
                .request("fs/readFile", json!({"path": spell(&file)}))
                .result()
                .await?;
            assert_eq!(unb64(&read["dataBase64"]), b"hello", "{what}");
            let dir = base.join(format!("d {form}/sub"));
            conn.request("fs/createDirectory", json!({"path": spell(&dir)}))
                .result()
                .await?;
            assert!(dir.is_dir(), "{what}");
            let meta = conn
                .request("fs/getMetadata", json!({"path": spell(&file)}))
                .result()
                .await?;
            assert_eq!(meta["isFile"], true, "{what}");
            assert_eq!(meta["size"], 5, "{what}");
            let listing = conn
                .request("fs/readDirectory", json!({"path": spell(&base)}))
                .result()
                .await?;
            let names: Vec<&str> = listing["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .filter_map(|entry| entry["fileName"].as_str())
                .collect();
            assert!(names.contains(&"f x.txt"), "{what}: {names:?}");
            let copy = base.join(format!("copy {form}"));
            conn.request(
                "fs/copy",
                json!({"sourcePath": spell(&file), "destinationPath": spell(&copy)}),
            )
            .result()
            .await?;
            assert_eq!(std::fs::read(&copy)?, b"hello", "{what}");
            // Result paths come back in the request's form.
            let canonical = conn
                .request(
                    "fs/canonicalize",
                    json!({"path": spell(&base.join("./x/../f x.txt"))}),
                )
                .result()
                .await?;
            assert_eq!(canonical["path"], spell(&file), "{what}");
            let joined = conn
                .request(
                    "fs/join",
                    json!({"basePath": spell(&base), "path": "c d/../f x.txt"}),
                )
                .result()
                .await?;
            assert_eq!(joined["path"], spell(&file), "{what}");
            let parent = conn
                .request("fs/parent", json!({"path": spell(&file)}))
                .result()
                .await?;
            assert_eq!(parent["path"], spell(&base), "{what}");
            conn.request("fs/remove", json!({"path": spell(&copy)}))
                .result()
                .await?;
            assert!(!copy.exists(), "{what}");
        }
        // A `file:` URI as join's `path` resolves too, and replaces the base.
        let joined = conn
            .request(
                "fs/join",
                json!({"basePath": "/elsewhere", "path": uri(&file)}),
            )
            .result()
            .await?;
        assert_eq!(joined["path"], p(&file));
        // A relative name that merely looks like `scheme:rest` is still relative.
        let joined = conn
            .request(
                "fs/join",
                json!({"basePath": "/notes", "path": "todo:2026.txt"}),
            )
            .result()
            .await?;
        assert_eq!(joined["path"], "/notes/todo:2026.txt");
        let root_parent = conn
            .request("fs/parent", json!({"path": "file:///"}))
            .result()
            .await?;
        assert_eq!(root_parent["path"], Value::Null);
    }
    Ok(())
}

#[tokio::test]
async fn bad_uris_get_upstreams_codes_in_fs_and_cwd() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        for (path, code) in [
            ("file://otherhost/tmp", INVALID_REQUEST),
            ("http://host/tmp", INVALID_PARAMS),
            ("file:///tmp/a%00b", INVALID_PARAMS),
            ("relative/x", INVALID_PARAMS),
        ] {
            let error = failure(&conn, "fs/getMetadata", json!({"path": path})).await?;
            assert_eq!(error.code, code, "{transport:?} {path}: {error}");
            let error = failure(
                &conn,
                "process/start",
                json!({"processId": "bad", "argv": ["true"], "cwd": path, "env": {}}),
            )
            .await?;
            assert_eq!(error.code, code, "{transport:?} cwd {path}: {error}");
            assert!(error.message.contains("cwd"), "{error}");
        }
        let error = failure(&conn, "fs/readFile", json!({"path": "a/b"})).await?;
        assert_eq!(
            error.message,
            "invalid params: path: path must be absolute, got \"a/b\""
        );
        let error = failure(
            &conn,
            "fs/copy",
            json!({"sourcePath": "/tmp", "destinationPath": "gopher://x/y"}),
        )
        .await?;
        assert!(error.message.contains("destinationPath"), "{error}");
    }
    Ok(())
}

#[tokio::test]
async fn cwd_may_be_a_file_uri() -> TestResult {
    for transport in BOTH {
        let server = start_server(transport, &[]).await?;
        let conn = server.connect().await?;
        let session = conn.initialize(CLIENT).await?;
        let (_guard, base) = spaced_dir()?;
        for (id, cwd) in [("uri", uri(&base)), ("plain", p(&base))] {
            conn.request(
                "process/start",
                json!({"processId": id, "argv": ["/bin/pwd"], "cwd": cwd, "env": {}}),
            )
            .result()
            .await?;
            let output = session.read_to_end(id).await?;
            assert_eq!(output.stdout_text(), format!("{}\n", p(&base)), "{id}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn fs_root_confines_file_uris_too() -> TestResult {
    let (_guard, base) = spaced_dir()?;
    let root = base.join("root");
    std::fs::create_dir_all(root.join("in dir"))?;
    std::fs::write(root.join("in dir/f"), "inside")?;
    std::fs::write(base.join("secret"), "outside")?;
    let conn = ready(Transport::WebSocket, &["--fs-root", &p(&root)]).await?;
    let session_conn = &conn;
    let read = session_conn
        .request("fs/readFile", json!({"path": uri(&root.join("in dir/f"))}))
        .result()
        .await?;
    assert_eq!(unb64(&read["dataBase64"]), b"inside");
    for path in [uri(&base.join("secret")), uri(&root.join("../secret"))] {
        let error = failure(&conn, "fs/readFile", json!({"path": path})).await?;
        // `..` is normalised away lexically: root/../secret is base/secret, outside.
        assert_eq!(error.code, INVALID_REQUEST, "{path}: {error}");
    }
    let canonical = conn
        .request(
            "fs/canonicalize",
            json!({"path": uri(&root.join("in dir"))}),
        )
        .result()
        .await?;
    assert_eq!(canonical["path"], uri(&root.join("in dir")));
    conn.request(
        "process/start",
        json!({"processId": "pwd", "argv": ["/bin/pwd"], "cwd": uri(&root.join("in dir")), "env": {}}),
    )
    .result()
    .await?;
    let output = conn.read_process_to_end("pwd").await?;
    assert_eq!(
        output.stdout_text(),
        format!("{}\n", p(&root.join("in dir")))
    );
    let error = failure(
        &conn,
        "process/start",
        json!({"processId": "out", "argv": ["/bin/pwd"], "cwd": uri(&base), "env": {}}),
    )
    .await?;
    assert_eq!(error.code, INVALID_REQUEST, "{error}");
    Ok(())
}

#[tokio::test]
async fn require_file_uris_refuses_plain_paths() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &["--require-file-uris"]).await?;
        let (_guard, base) = spaced_dir()?;
        let error = failure(&conn, "fs/getMetadata", json!({"path": p(&base)})).await?;
        assert_eq!(error.code, INVALID_PARAMS, "{transport:?}: {error}");
        assert!(error.message.contains("file: URI"), "{error}");
        let error = failure(
            &conn,
            "process/start",
            json!({"processId": "x", "argv": ["true"], "cwd": "/", "env": {}}),
        )
        .await?;
        assert_eq!(error.code, INVALID_PARAMS, "{transport:?}: {error}");
        let meta = conn
            .request("fs/getMetadata", json!({"path": uri(&base)}))
            .result()
            .await?;
        assert_eq!(meta["isDirectory"], true);
        conn.request(
            "process/start",
            json!({"processId": "x", "argv": ["true"], "cwd": "file:///", "env": {}}),
        )
        .result()
        .await?;
    }
    Ok(())
}

/// `base/real/file`, `base/dirlink -> real`, `base/filelink -> real/file`.
fn linked_tree(base: &Path) -> std::io::Result<()> {
    std::fs::create_dir(base.join("real"))?;
    std::fs::write(base.join("real/file"), "target")?;
    symlink("real", base.join("dirlink"))?;
    symlink("real/file", base.join("filelink"))?;
    Ok(())
}

#[tokio::test]
async fn follow_symlinks_false_refuses_links_anywhere_in_the_path() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let (_guard, base) = spaced_dir()?;
        linked_tree(&base)?;
        let linked = [base.join("filelink"), base.join("dirlink/file")];
        for path in &linked {
            for (method, extra) in [
                ("fs/readFile", json!({})),
                ("fs/writeFile", json!({"dataBase64": b64(b"x")})),
                ("fs/getMetadata", json!({})),
                ("fs/remove", json!({"recursive": false})),
            ] {
                let mut params = json!({"path": uri(path), "followSymlinks": false});
                params
                    .as_object_mut()
                    .expect("object")
                    .extend(extra.as_object().expect("object").clone());
                let error = failure(&conn, method, params).await?;
                assert_eq!(
                    error.code,
                    INVALID_REQUEST,
                    "{transport:?} {method} {}: {error}",
                    path.display()
                );
                assert_eq!(error.message, "path contains a symbolic link");
            }
        }
        let error = failure(
            &conn,
            "fs/createDirectory",
            json!({"path": p(&base.join("dirlink/new/deeper")), "followSymlinks": false}),
        )
        .await?;
        assert_eq!(error.code, INVALID_REQUEST, "{error}");
        assert!(!base.join("real/new").exists());
        // Nothing was written or removed through a link.
        assert_eq!(std::fs::read(base.join("real/file"))?, b"target");
        assert!(base.join("filelink").symlink_metadata().is_ok());

        // Paths without links work with `false`.
        let plain = base.join("real/plain");
        conn.request(
            "fs/writeFile",
            json!({"path": p(&plain), "dataBase64": b64(b"p"), "followSymlinks": false}),
        )
        .result()
        .await?;
        let read = conn
            .request(
                "fs/readFile",
                json!({"path": uri(&plain), "followSymlinks": false}),
            )
            .result()
            .await?;
        assert_eq!(unb64(&read["dataBase64"]), b"p");
        conn.request(
            "fs/getMetadata",
            json!({"path": p(&plain), "followSymlinks": false}),
        )
        .result()
        .await?;
        conn.request(
            "fs/createDirectory",
            json!({"path": p(&base.join("real/made/deep")), "followSymlinks": false}),
        )
        .result()
        .await?;
        assert!(base.join("real/made/deep").is_dir());
        conn.request(
            "fs/remove",
            json!({"path": p(&plain), "recursive": false, "followSymlinks": false}),
        )
        .result()
        .await?;
        assert!(!plain.exists());
    }
    Ok(())
}

#[tokio::test]
async fn follow_symlinks_true_or_absent_follows_and_remove_never_deletes_a_target() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let (_guard, base) = spaced_dir()?;
        linked_tree(&base)?;
        for follow in [json!(true), Value::Null] {
            let with = |mut params: Value| {
                if !follow.is_null() {
                    params["followSymlinks"] = follow.clone();
                }
                params
            };
            let read = conn
                .request(
                    "fs/readFile",
                    with(json!({"path": p(&base.join("filelink"))})),
                )
                .result()
                .await?;
            assert_eq!(unb64(&read["dataBase64"]), b"target", "{follow}");
            conn.request(
                "fs/writeFile",
                with(
                    json!({"path": uri(&base.join("dirlink/file")), "dataBase64": b64(b"target")}),
                ),
            )
            .result()
            .await?;
            let meta = conn
                .request(
                    "fs/getMetadata",
                    with(json!({"path": p(&base.join("filelink"))})),
                )
                .result()
                .await?;
            assert_eq!(
                (meta["isFile"].clone(), meta["isSymlink"].clone()),
                (json!(true), json!(true))
            );
            conn.request(
                "fs/createDirectory",
                with(json!({"path": p(&base.join("dirlink/made"))})),
            )
            .result()
            .await?;
            assert!(base.join("real/made").is_dir());
            std::fs::remove_dir(base.join("real/made"))?;
        }
        // remove, whatever the flag, removes the link and never its target.
        for (name, follow) in [("l1", Some(true)), ("l2", None)] {
            symlink("real", base.join(name))?;
            let mut params = json!({"path": p(&base.join(name))});
            if let Some(follow) = follow {
                params["followSymlinks"] = json!(follow);
            }
            conn.request("fs/remove", params).result().await?;
            assert!(base.join(name).symlink_metadata().is_err(), "{name}");
            assert_eq!(std::fs::read(base.join("real/file"))?, b"target");
        }
        // `false` with `recursive` (the default) is unsupported, before anything else.
        for params in [
            json!({"path": p(&base.join("dirlink")), "followSymlinks": false}),
            json!({"path": p(&base.join("real")), "followSymlinks": false, "recursive": true}),
        ] {
            let error = failure(&conn, "fs/remove", params).await?;
            assert_eq!(error.code, INTERNAL_ERROR, "{error}");
        }
        assert_eq!(std::fs::read(base.join("real/file"))?, b"target");
        assert!(base.join("dirlink").symlink_metadata().is_ok());
    }
    Ok(())
}

#[tokio::test]
async fn follow_symlinks_false_under_fs_root() -> TestResult {
    let (_guard, base) = spaced_dir()?;
    linked_tree(&base)?;
    let conn = ready(Transport::WebSocket, &["--fs-root", &p(&base)]).await?;
    for path in [base.join("filelink"), base.join("dirlink/file")] {
        for method in ["fs/readFile", "fs/getMetadata"] {
            let error = failure(
                &conn,
                method,
                json!({"path": uri(&path), "followSymlinks": false}),
            )
            .await?;
            assert_eq!(error.code, INVALID_REQUEST, "{method}: {error}");
            assert_eq!(error.message, "path contains a symbolic link");
        }
        let error = failure(
            &conn,
            "fs/writeFile",
            json!({"path": p(&path), "dataBase64": b64(b"x"), "followSymlinks": false}),
        )
        .await?;
        assert_eq!(error.code, INVALID_REQUEST, "{error}");
    }
    assert_eq!(std::fs::read(base.join("real/file"))?, b"target");
    let read = conn
        .request(
            "fs/readFile",
            json!({"path": uri(&base.join("real/file")), "followSymlinks": false}),
        )
        .result()
        .await?;
    assert_eq!(unb64(&read["dataBase64"]), b"target");
    Ok(())
}

#[tokio::test]
async fn codex_start_fields_are_ignored_when_null_and_refused_otherwise() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let start = |id: &str, extra: Value| {
            let mut params = json!({"processId": id, "argv": ["true"], "cwd": "/", "env": {}});
            params
                .as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            params
        };
        for field in [
            "shellSnapshot",
            "managedNetwork",
            "enforceManagedNetwork",
            "networkProxy",
        ] {
            let error = failure(
                &conn,
                "process/start",
                start("x", json!({ field: {"anything": 1} })),
            )
            .await?;
            assert_eq!(error.code, INVALID_PARAMS, "{transport:?} {field}: {error}");
            assert!(error.message.contains(field), "{error}");
            let error =
                failure(&conn, "process/start", start("x", json!({ field: false }))).await?;
            assert_eq!(error.code, INVALID_PARAMS, "{field} false: {error}");
        }
        let error = failure(
            &conn,
            "process/start",
            start("x", json!({"sandbox": {"type": "workspace-write"}})),
        )
        .await?;
        assert_eq!(error.code, INVALID_PARAMS, "{error}");
        assert!(error.message.contains("sandbox"), "{error}");
        let ok = conn
            .request(
                "process/start",
                start(
                    "ok",
                    json!({"sandbox": "danger-full-access", "shellSnapshot": null, "managedNetwork": null,
                        "enforceManagedNetwork": null, "networkProxy": null}),
                ),
            )
            .result()
            .await?;
        assert_eq!(ok["sandboxType"], "none");
    }
    Ok(())
}

#[tokio::test]
async fn a_repeated_write_id_reaches_the_child_once() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        conn.request(
            "process/start",
            json!({"processId": "cat", "argv": ["/bin/cat"], "cwd": "/", "env": {}, "pipeStdin": true}),
        )
        .result()
        .await?;
        let write = |chunk: &[u8], id: Option<&str>, close: bool| {
            let mut params = json!({"processId": "cat", "chunk": b64(chunk)});
            if let Some(id) = id {
                params["writeId"] = json!(id);
            }
            if close {
                params["closeStdin"] = json!(true);
            }
            params
        };
        for (chunk, id, close) in [
            (&b"one\n"[..], Some("a"), false),
            (b"one\n", Some("a"), false),
            (b"two\n", Some("b"), false),
            (b"one\n", Some("a"), false),
            (b"free\n", None, false),
            (b"free\n", None, false),
            (b"", Some("close"), true),
            // A re-sent close is answered as the first was (accepted), not stdinClosed.
            (b"", Some("close"), true),
        ] {
            let result = conn
                .request("process/write", write(chunk, id, close))
                .result()
                .await?;
            assert_eq!(result["status"], "accepted", "{transport:?} {id:?}");
        }
        // A fresh id after the close is refused as usual.
        let result = conn
            .request("process/write", write(b"late", Some("late"), false))
            .result()
            .await?;
        assert_eq!(result["status"], "stdinClosed");
        let output = conn.read_process_to_end("cat").await?;
        assert_eq!(
            output.stdout_text(),
            "one\ntwo\nfree\nfree\n",
            "{transport:?}"
        );
        // Unknown processes are not recorded: the same id is answered the same way.
        for _ in 0..2 {
            let result = conn
                .request(
                    "process/write",
                    json!({"processId": "nope", "chunk": "", "writeId": "a"}),
                )
                .result()
                .await?;
            assert_eq!(result["status"], "unknownProcess");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_repeat_of_a_queued_write_waits_for_it_and_gets_its_status() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        // The child never reads: a write bigger than the pipe and the 1 MiB high-water
        // mark stays queued, unanswered.
        conn.request(
            "process/start",
            json!({"processId": "stuck", "argv": ["sleep", "1000"], "cwd": "/", "env": {"PATH": "/usr/bin:/bin"}, "pipeStdin": true}),
        )
        .result()
        .await?;
        let big = vec![b'x'; 4 * 1024 * 1024];
        let params = json!({"processId": "stuck", "chunk": b64(&big), "writeId": "big"});
        let first = conn.send_request("process/write", params.clone()).await?;
        let repeat = conn
            .send_request(
                "process/write",
                json!({"processId": "stuck", "chunk": b64(b"small"), "writeId": "big"}),
            )
            .await?;
        let waited = conn
            .response_within(&repeat, Duration::from_millis(500))
            .await;
        assert!(
            waited.is_err(),
            "{transport:?}: the repeat waits for the first write: {waited:?}"
        );
        // Another process's requests are not held up meanwhile.
        conn.request("environment/info", json!({})).result().await?;
        // The child dies: its stdin is shut, the first write is answered, then the repeat.
        conn.request("process/terminate", json!({"processId": "stuck"}))
            .result()
            .await?;
        let first = conn.response(&first).await?;
        let repeat = conn.response(&repeat).await?;
        let status = |response: &exec_server_harness::Response| {
            response.result.as_ref().expect("a result")["status"].clone()
        };
        assert_eq!(status(&first), "accepted", "{transport:?}");
        assert_eq!(status(&repeat), status(&first), "{transport:?}");
    }
    Ok(())
}

#[tokio::test]
async fn duplicate_keys_and_too_many_values_are_parse_errors_and_the_connection_stays_open(
) -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let too_many = format!(
            r#"{{"id":5,"method":"environment/info","params":{{"pad":[{}]}}}}"#,
            vec!["0"; 262_144].join(",")
        );
        for frame in [
            r#"{"id":1,"id":2,"method":"environment/info"}"#.to_owned(),
            r#"{"id":3,"method":"fs/getMetadata","params":{"path":"/","path":"/tmp"}}"#.to_owned(),
            too_many,
        ] {
            conn.send_raw(&frame).await?;
            let reply = conn.response_without_id().await?;
            let error = reply.error.expect("an error");
            assert_eq!(error.code, PARSE_ERROR, "{transport:?}: {error:?}");
            let answered = conn.request("environment/info", json!({})).result().await?;
            assert!(answered.is_object(), "{transport:?}: still answering");
        }
        // A `trace` is accepted and ignored.
        conn.send_raw(r#"{"id":"traced","method":"environment/status","trace":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"k=v"}}"#)
            .await?;
        let reply = conn.response(&"traced".into()).await?;
        assert_eq!(
            reply.result.expect("a result")["status"],
            "ready",
            "{transport:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn capabilities_advertise_both_revisions() -> TestResult {
    let server = start_server(Transport::WebSocket, &[]).await?;
    let session = server.connect().await?.initialize(CLIENT).await?;
    assert_eq!(
        session.initialize_json()["capabilities"]["revisions"],
        json!(["2026-06", "2026-08"])
    );
    Ok(())
}
