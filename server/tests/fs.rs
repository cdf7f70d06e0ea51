//! File-system methods (docs/protocol.md §7) over both transports, in a temporary directory,
//! and the `--fs-root` confinement.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use cap_fs_ext::DirExt;
use cap_std::fs::Dir;

use common::*;
use exec_server_harness::protocol::{EnvironmentInfoParams, ReadFileParams, WriteFileParams};
use exec_server_harness::{Connection, ExecServer, HarnessError, Transport};
use serde_json::{json, Value};

/// Typed `fs/writeFile` params.
fn write_file(path: &Path, data: &[u8]) -> WriteFileParams {
    WriteFileParams {
        path: path.into(),
        data_base64: data.to_vec().into(),
        follow_symlinks: None,
        sandbox: None,
    }
}

/// Typed `fs/readFile` params.
fn read_file(path: &Path) -> ReadFileParams {
    ReadFileParams {
        path: path.into(),
        follow_symlinks: None,
        sandbox: None,
    }
}

#[tokio::test]
async fn write_then_read_round_trips_every_byte_value() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("bytes.bin");
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        conn.call(&write_file(&file, &data)).await?;
        assert_eq!(
            std::fs::read(&file)?,
            data,
            "{transport:?}: written exactly"
        );
        let read = conn.call(&read_file(&file)).await?;
        assert_eq!(read.data_base64.0, data, "{transport:?}");
        // Truncates an existing file.
        conn.call(&write_file(&file, b"short")).await?;
        assert_eq!(std::fs::read(&file)?, b"short");
        let empty = dir.path().join("empty");
        conn.call(&write_file(&empty, b"")).await?;
        let read = conn
            .request("fs/readFile", json!({"path": p(&empty)}))
            .result()
            .await?;
        assert_eq!(read["dataBase64"], "");
    }
    Ok(())
}

#[tokio::test]
async fn a_large_file_reads_back_exactly() -> TestResult {
    let conn = ready(Transport::WebSocket, &[]).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("large");
    // Not a multiple of the server's base64 block, so a partial last block is covered.
    // The 9 MB reply travels as 1 MiB websocket fragments, reassembled by the client.
    let data: Vec<u8> = (0..7_000_001u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&file, &data)?;
    let read = conn.call(&read_file(&file)).await?;
    assert!(read.data_base64.0 == data, "byte-exact");
    Ok(())
}

#[tokio::test]
async fn read_and_write_errors_map_to_codes() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("missing");
        let error = failure(&conn, "fs/readFile", json!({"path": p(&missing)})).await?;
        assert_eq!(error.code, NOT_FOUND, "{transport:?}: {error}");
        assert!(error.message.contains("No such file"), "OS text: {error}");
        let nested = dir.path().join("no/parent/file");
        let error = failure(
            &conn,
            "fs/writeFile",
            json!({"path": p(&nested), "dataBase64": ""}),
        )
        .await?;
        assert_eq!(error.code, NOT_FOUND, "missing parent");
        let error = failure(&conn, "fs/readFile", json!({"path": "relative/path"})).await?;
        assert_eq!(error.code, INVALID_PARAMS);
        assert!(error.message.contains("absolute"), "{error}");
        let error = failure(
            &conn,
            "fs/writeFile",
            json!({"path": p(&dir.path().join("x")), "dataBase64": "@@"}),
        )
        .await?;
        assert_eq!(error.code, INVALID_PARAMS);
        assert!(!dir.path().join("x").exists(), "bad base64 creates nothing");
        let error = failure(&conn, "fs/readFile", json!({"path": p(dir.path())})).await?;
        assert_eq!(
            error.code, -32603,
            "reading a directory is another OS error: {error}"
        );
        let locked = dir.path().join("locked");
        std::fs::write(&locked, "x")?;
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000))?;
        // root reads anything; only check the mapping where permissions apply.
        if std::fs::read(&locked).is_err() {
            let error = failure(&conn, "fs/readFile", json!({"path": p(&locked)})).await?;
            assert_eq!(error.code, INVALID_REQUEST, "permission denied");
        }
    }
    Ok(())
}

#[tokio::test]
async fn create_directory_defaults_to_recursive() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let deep = dir.path().join("a/b/c");
        conn.request("fs/createDirectory", json!({"path": p(&deep)}))
            .result()
            .await?;
        assert!(deep.is_dir(), "{transport:?}");
        let flat = dir.path().join("x/y");
        let error = failure(
            &conn,
            "fs/createDirectory",
            json!({"path": p(&flat), "recursive": false}),
        )
        .await?;
        assert_eq!(error.code, NOT_FOUND);
        conn.request(
            "fs/createDirectory",
            json!({"path": p(&dir.path().join("x")), "recursive": false}),
        )
        .result()
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn metadata_of_file_directory_symlink_and_broken_link() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("file");
        std::fs::write(&file, "x")?;
        let link = dir.path().join("link");
        symlink(&file, &link)?;
        let dir_link = dir.path().join("dir-link");
        symlink(dir.path(), &dir_link)?;
        let broken = dir.path().join("broken");
        symlink(dir.path().join("nowhere"), &broken)?;
        let meta = |path: &Path| json!({"path": p(path)});
        let file_meta = conn.request("fs/getMetadata", meta(&file)).result().await?;
        assert_eq!(
            (
                file_meta["isFile"].clone(),
                file_meta["isDirectory"].clone(),
                file_meta["isSymlink"].clone()
            ),
            (json!(true), json!(false), json!(false))
        );
        assert!(
            file_meta["modifiedAtMs"]
                .as_u64()
                .is_some_and(|ms| ms > 1_600_000_000_000),
            "{file_meta}"
        );
        let dir_meta = conn
            .request("fs/getMetadata", meta(dir.path()))
            .result()
            .await?;
        assert_eq!(dir_meta["isDirectory"], true);
        let link_meta = conn.request("fs/getMetadata", meta(&link)).result().await?;
        assert_eq!(
            (link_meta["isFile"].clone(), link_meta["isSymlink"].clone()),
            (json!(true), json!(true)),
            "type through the link, isSymlink from lstat"
        );
        let dir_link_meta = conn
            .request("fs/getMetadata", meta(&dir_link))
            .result()
            .await?;
        assert_eq!(
            (
                dir_link_meta["isDirectory"].clone(),
                dir_link_meta["isSymlink"].clone()
            ),
            (json!(true), json!(true))
        );
        let broken_meta = conn
            .request("fs/getMetadata", meta(&broken))
            .result()
            .await?;
        assert_eq!(
            (
                broken_meta["isFile"].clone(),
                broken_meta["isDirectory"].clone(),
                broken_meta["isSymlink"].clone()
            ),
            (json!(false), json!(false), json!(true)),
            "{transport:?}: {broken_meta}"
        );
        let error = failure(&conn, "fs/getMetadata", meta(&dir.path().join("missing"))).await?;
        assert_eq!(error.code, NOT_FOUND);
    }
    Ok(())
}

#[tokio::test]
async fn read_directory_lists_types_through_links_and_skips_broken_ones() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("file"), "x")?;
        std::fs::create_dir(dir.path().join("sub"))?;
        symlink(dir.path().join("sub"), dir.path().join("link-to-sub"))?;
        symlink(dir.path().join("nowhere"), dir.path().join("broken"))?;
        let listing = conn
            .request("fs/readDirectory", json!({"path": p(dir.path())}))
            .result()
            .await?;
        let mut entries: Vec<(String, bool, bool)> = listing["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                (
                    e["fileName"].as_str().unwrap_or_default().to_owned(),
                    e["isDirectory"] == true,
                    e["isFile"] == true,
                )
            })
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            [
                ("file".into(), false, true),
                ("link-to-sub".into(), true, false),
                ("sub".into(), true, false)
            ],
            "{transport:?}"
        );
        let error = failure(
            &conn,
            "fs/readDirectory",
            json!({"path": p(&dir.path().join("file"))}),
        )
        .await?;
        assert_eq!(error.code, -32603, "not a directory: {error}");
    }
    Ok(())
}

#[tokio::test]
async fn remove_takes_links_not_targets_and_defaults_to_recursive_and_force() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("target");
        std::fs::write(&target, "keep me")?;
        let link = dir.path().join("link");
        symlink(&target, &link)?;
        conn.request("fs/remove", json!({"path": p(&link)}))
            .result()
            .await?;
        assert!(
            link.symlink_metadata().is_err(),
            "{transport:?}: link removed"
        );
        assert_eq!(std::fs::read(&target)?, b"keep me", "target untouched");
        let dir_target = dir.path().join("tree");
        std::fs::create_dir_all(dir_target.join("inner"))?;
        std::fs::write(dir_target.join("inner/file"), "x")?;
        let dir_link = dir.path().join("tree-link");
        symlink(&dir_target, &dir_link)?;
        conn.request("fs/remove", json!({"path": p(&dir_link)}))
            .result()
            .await?;
        assert!(
            dir_target.join("inner/file").exists(),
            "a link to a directory is removed, not followed"
        );
        let error = failure(
            &conn,
            "fs/remove",
            json!({"path": p(&dir_target), "recursive": false}),
        )
        .await?;
        assert_eq!(
            error.code, -32603,
            "non-empty directory without recursive: {error}"
        );
        conn.request("fs/remove", json!({"path": p(&dir_target)}))
            .result()
            .await?;
        assert!(!dir_target.exists());
        conn.request("fs/remove", json!({"path": p(&dir.path().join("missing"))}))
            .result()
            .await?;
        let error = failure(
            &conn,
            "fs/remove",
            json!({"path": p(&dir.path().join("missing")), "force": false}),
        )
        .await?;
        assert_eq!(error.code, NOT_FOUND);
    }
    Ok(())
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    let status = std::process::Command::new("mkfifo").arg(path).status()?;
    if !status.success() {
        return Err(std::io::Error::other("mkfifo failed"));
    }
    Ok(())
}

#[tokio::test]
async fn copy_of_a_tree_keeps_links_as_links_and_skips_fifos() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let source = dir.path().join("source");
        std::fs::create_dir_all(source.join("nested/deeper"))?;
        std::fs::write(source.join("top.txt"), "top")?;
        std::fs::write(source.join("nested/deeper/leaf.bin"), [0u8, 1, 2, 255])?;
        std::fs::set_permissions(
            source.join("top.txt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o751),
        )?;
        symlink("top.txt", source.join("relative-link"))?;
        symlink("/etc/hostname", source.join("absolute-link"))?;
        mkfifo(&source.join("pipe"))?;
        let destination = dir.path().join("copy");
        let params = json!({"sourcePath": p(&source), "destinationPath": p(&destination), "recursive": true});
        conn.request("fs/copy", params).result().await?;
        assert_eq!(
            std::fs::read(destination.join("top.txt"))?,
            b"top",
            "{transport:?}"
        );
        assert_eq!(
            std::fs::read(destination.join("nested/deeper/leaf.bin"))?,
            [0u8, 1, 2, 255]
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(destination.join("top.txt"))?.permissions(),
        );
        assert_eq!(mode & 0o777, 0o751, "permissions kept");
        assert_eq!(
            std::fs::read_link(destination.join("relative-link"))?,
            Path::new("top.txt")
        );
        assert_eq!(
            std::fs::read_link(destination.join("absolute-link"))?,
            Path::new("/etc/hostname")
        );
        assert!(
            destination.join("pipe").symlink_metadata().is_err(),
            "the FIFO is skipped"
        );

        let error = failure(
            &conn,
            "fs/copy",
            json!({"sourcePath": p(&source), "destinationPath": p(&dir.path().join("other"))}),
        )
        .await?;
        assert_eq!(
            error.code, INVALID_REQUEST,
            "a directory needs recursive: {error}"
        );
        let into_itself = json!({"sourcePath": p(&source), "destinationPath": p(&source.join("nested/again")), "recursive": true});
        let error = failure(&conn, "fs/copy", into_itself).await?;
        assert_eq!(error.code, INVALID_REQUEST, "{error}");
        assert!(!source.join("nested/again").exists());
        let onto_itself =
            json!({"sourcePath": p(&source), "destinationPath": p(&source), "recursive": true});
        assert_eq!(
            failure(&conn, "fs/copy", onto_itself).await?.code,
            INVALID_REQUEST
        );
        let fifo_alone = json!({"sourcePath": p(&source.join("pipe")), "destinationPath": p(&dir.path().join("pipe-copy"))});
        let error = failure(&conn, "fs/copy", fifo_alone).await?;
        assert_eq!(
            error.code, INVALID_REQUEST,
            "a FIFO on its own is refused: {error}"
        );
        let link_alone = json!({"sourcePath": p(&source.join("relative-link")), "destinationPath": p(&dir.path().join("link-copy"))});
        conn.request("fs/copy", link_alone).result().await?;
        assert_eq!(
            std::fs::read_link(dir.path().join("link-copy"))?,
            Path::new("top.txt")
        );
        let missing = json!({"sourcePath": p(&dir.path().join("missing")), "destinationPath": p(&dir.path().join("m2"))});
        assert_eq!(failure(&conn, "fs/copy", missing).await?.code, NOT_FOUND);
    }
    Ok(())
}

/// Merging a tree into an existing directory never writes through a symlink found there.
#[tokio::test]
async fn a_tree_copy_does_not_write_through_links_in_the_destination() -> TestResult {
    let conn = ready(Transport::WebSocket, &[]).await?;
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source");
    std::fs::create_dir(&source)?;
    std::fs::write(source.join("file"), "new")?;
    let elsewhere = dir.path().join("elsewhere");
    std::fs::write(&elsewhere, "keep")?;
    let destination = dir.path().join("destination");
    std::fs::create_dir(&destination)?;
    symlink(&elsewhere, destination.join("file"))?;
    let params =
        json!({"sourcePath": p(&source), "destinationPath": p(&destination), "recursive": true});
    let error = failure(&conn, "fs/copy", params).await?;
    assert_eq!(error.code, -32603, "{error}");
    assert_eq!(
        std::fs::read(&elsewhere)?,
        b"keep",
        "the link's target is untouched"
    );
    Ok(())
}

#[tokio::test]
async fn canonicalize_join_and_parent() -> TestResult {
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let dir = tempfile::tempdir()?;
        let real = std::fs::canonicalize(dir.path())?;
        std::fs::create_dir(real.join("sub"))?;
        symlink(real.join("sub"), real.join("link"))?;
        let canonical = conn
            .request(
                "fs/canonicalize",
                json!({"path": p(&real.join("link/../link/."))}),
            )
            .result()
            .await?;
        assert_eq!(canonical["path"], p(&real.join("sub")), "{transport:?}");
        let error = failure(
            &conn,
            "fs/canonicalize",
            json!({"path": p(&real.join("missing"))}),
        )
        .await?;
        assert_eq!(error.code, NOT_FOUND);
        let joined = conn
            .request("fs/join", json!({"basePath": "/a/b", "path": "../c/./d"}))
            .result()
            .await?;
        assert_eq!(joined["path"], "/a/c/d");
        let joined = conn
            .request("fs/join", json!({"basePath": "/a", "path": "/etc"}))
            .result()
            .await?;
        assert_eq!(joined["path"], "/etc", "an absolute path replaces the base");
        let error = failure(&conn, "fs/join", json!({"basePath": "a", "path": "b"})).await?;
        assert_eq!(error.code, INVALID_PARAMS);
        assert_eq!(
            conn.request("fs/parent", json!({"path": "/a/b"}))
                .result()
                .await?["path"],
            "/a"
        );
        assert_eq!(
            conn.request("fs/parent", json!({"path": "/"}))
                .result()
                .await?["path"],
            Value::Null
        );
    }
    Ok(())
}

#[tokio::test]
async fn sandbox_profiles_are_refused_never_ignored() -> TestResult {
    let conn = ready(Transport::WebSocket, &[]).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("f");
    for sandbox in [
        json!({"type": "read-only"}),
        json!({"type": "workspace-write", "writableRoots": []}),
        json!("read-only"),
    ] {
        let params = json!({"path": p(&file), "dataBase64": b64(b"x"), "sandbox": sandbox});
        let error = failure(&conn, "fs/writeFile", params).await?;
        assert_eq!(error.code, INVALID_PARAMS);
        assert_eq!(error.message, "sandbox profiles are not supported");
        assert!(!file.exists(), "nothing was written for {sandbox}");
    }
    for sandbox in [Value::Null, json!({"type": "danger-full-access"})] {
        let params = json!({"path": p(&file), "dataBase64": b64(b"x"), "sandbox": sandbox});
        conn.request("fs/writeFile", params).result().await?;
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_writes_to_different_files_all_land() -> TestResult {
    let conn = ready(Transport::WebSocket, &[]).await?;
    let dir = tempfile::tempdir()?;
    let mut ids = Vec::new();
    for i in 0..50 {
        let data = format!("file {i} ").repeat(1000);
        let params = json!({"path": p(&dir.path().join(format!("f{i}"))), "dataBase64": b64(data.as_bytes())});
        ids.push(conn.send_request("fs/writeFile", params).await?);
    }
    for id in &ids {
        conn.response(id).await?.into_result()?;
    }
    for i in 0..50 {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(format!("f{i}")))?,
            format!("file {i} ").repeat(1000)
        );
    }
    Ok(())
}

/// `--fs-root`: every shape of escape is refused with -32600 and nothing outside changes.
#[tokio::test]
async fn fs_root_refuses_dot_dot_and_symlink_escapes() -> TestResult {
    let outside = tempfile::tempdir()?;
    let secret = outside.path().join("secret");
    std::fs::write(&secret, "outside")?;
    let base = tempfile::tempdir()?;
    let root = std::fs::canonicalize(base.path())?.join("root");
    std::fs::create_dir_all(root.join("inside/dir"))?;
    std::fs::write(root.join("inside/file"), "inside")?;
    symlink(&secret, root.join("link-to-secret"))?;
    symlink(outside.path(), root.join("link-to-outside-dir"))?;
    symlink("../../..", root.join("inside/dir/up-three"))?;
    symlink("file", root.join("inside/relative-ok"))?;
    for transport in BOTH {
        let conn = ready(transport, &["--fs-root", &p(&root)]).await?;
        let capabilities = conn.call(&EnvironmentInfoParams {}).await;
        assert!(capabilities.is_ok());
        let read = |path: String| json!({"path": path});
        let escapes = [
            p(&secret),                                            // plainly outside
            format!("{}/../{}", p(&root), "x"),                    // `..` out of the root
            p(&root.join("link-to-secret")),                       // symlink, last component
            p(&root.join("link-to-outside-dir/secret")),           // symlink in a parent
            p(&root.join("inside/dir/up-three")),                  // relative link to outside
            p(&root.join("inside/dir/up-three/root/inside/file")), // climbs out and back in
        ];
        for path in &escapes {
            let error = failure(&conn, "fs/readFile", read(path.clone())).await?;
            assert_eq!(error.code, INVALID_REQUEST, "{transport:?} {path}: {error}");
        }
        let write =
            json!({"path": p(&root.join("link-to-outside-dir/new")), "dataBase64": b64(b"x")});
        assert_eq!(
            failure(&conn, "fs/writeFile", write).await?.code,
            INVALID_REQUEST
        );
        assert!(
            !outside.path().join("new").exists(),
            "nothing written outside"
        );
        let remove = json!({"path": p(&root.join("link-to-outside-dir/secret"))});
        assert_eq!(
            failure(&conn, "fs/remove", remove).await?.code,
            INVALID_REQUEST
        );
        assert!(secret.exists());
        let copy_out = json!({"sourcePath": p(&root.join("inside/file")), "destinationPath": p(&outside.path().join("copied"))});
        assert_eq!(
            failure(&conn, "fs/copy", copy_out).await?.code,
            INVALID_REQUEST
        );
        let canonical = json!({"path": p(&root.join("link-to-outside-dir"))});
        assert_eq!(
            failure(&conn, "fs/canonicalize", canonical).await?.code,
            INVALID_REQUEST
        );

        // Inside the root everything works, relative links included.
        let inside = conn
            .request("fs/readFile", read(p(&root.join("inside/relative-ok"))))
            .result()
            .await?;
        assert_eq!(unb64(&inside["dataBase64"]), b"inside");
        let listing = conn
            .request("fs/readDirectory", read(p(&root)))
            .result()
            .await?;
        let names: Vec<&str> = listing["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["fileName"].as_str())
            .collect();
        assert!(
            names.contains(&"inside") && !names.contains(&"link-to-secret"),
            "escaping links are not listed: {names:?}"
        );

        // Process working directories are confined the same way.
        let start = |cwd: String| json!({"processId": format!("cwd-{}", cwd.len()), "argv": ["/bin/pwd"], "cwd": cwd, "env": {}});
        let error = failure(
            &conn,
            "process/start",
            start(p(&root.join("link-to-outside-dir"))),
        )
        .await?;
        assert_eq!(error.code, INVALID_REQUEST, "{error}");
        let error = failure(&conn, "process/start", start(p(outside.path()))).await?;
        assert_eq!(error.code, INVALID_REQUEST, "{error}");
        let session_process = conn
            .request("process/start", start(p(&root.join("inside/dir"))))
            .result()
            .await?;
        let pid = session_process["processId"]
            .as_str()
            .expect("id")
            .to_owned();
        let output = conn.read_process_to_end(&pid).await?;
        assert_eq!(
            output.stdout_text(),
            format!("{}\n", p(&root.join("inside/dir")))
        );
    }
    Ok(())
}

/// Under `--fs-root`, an absolute symlink is refused even when it points inside the root
/// (cap-std resolves every link beneath the root handle and has no meaning for `/`);
/// relative links to the same places work.
#[tokio::test]
async fn fs_root_refuses_absolute_links_even_to_inside_the_root() -> TestResult {
    let base = tempfile::tempdir()?;
    let root = std::fs::canonicalize(base.path())?.join("root");
    std::fs::create_dir_all(root.join("inside"))?;
    std::fs::write(root.join("inside/file"), "inside")?;
    symlink(root.join("inside/file"), root.join("absolute-file"))?;
    symlink(root.join("inside"), root.join("absolute-dir"))?;
    symlink("inside/file", root.join("relative-file"))?;
    symlink("inside", root.join("relative-dir"))?;
    let conn = ready(Transport::WebSocket, &["--fs-root", &p(&root)]).await?;
    for path in [root.join("absolute-file"), root.join("absolute-dir/file")] {
        let error = failure(&conn, "fs/readFile", json!({"path": p(&path)})).await?;
        assert_eq!(error.code, INVALID_REQUEST, "{}: {error}", path.display());
        assert!(error.message.contains("outside"), "{error}");
    }
    for path in [root.join("relative-file"), root.join("relative-dir/file")] {
        let read = conn
            .request("fs/readFile", json!({"path": p(&path)}))
            .result()
            .await?;
        assert_eq!(unb64(&read["dataBase64"]), b"inside", "{}", path.display());
    }
    Ok(())
}

#[tokio::test]
async fn capabilities_advertise_the_fs_root() -> TestResult {
    let root = tempfile::tempdir()?;
    let server = start_server(Transport::WebSocket, &["--fs-root", &p(root.path())]).await?;
    let conn = server.connect().await?;
    let session = conn.initialize(CLIENT).await?;
    assert_eq!(
        session.initialize_json()["capabilities"]["fs"]["root"],
        true
    );
    let plain = start_server(Transport::WebSocket, &[]).await?;
    let session = plain.connect().await?.initialize(CLIENT).await?;
    assert_eq!(
        session.initialize_json()["capabilities"]["fs"]["root"],
        false
    );
    Ok(())
}

/// A component swapped for a symlink between any check and the use must not leak the
/// outside: a thread flips `root/swap` between a real directory and a link to outside
/// while the server reads through it.
#[tokio::test]
async fn fs_root_holds_while_a_component_is_swapped_for_a_symlink() -> TestResult {
    let outside = tempfile::tempdir()?;
    std::fs::write(outside.path().join("file"), "OUTSIDE")?;
    let base = tempfile::tempdir()?;
    let root = std::fs::canonicalize(base.path())?.join("root");
    std::fs::create_dir_all(root.join("real"))?;
    std::fs::write(root.join("real/file"), "inside")?;
    let conn = ready(Transport::WebSocket, &["--fs-root", &p(&root)]).await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (root, outside, stop) = (root.clone(), outside.path().to_owned(), stop.clone());
        std::thread::spawn(move || {
            let swap = root.join("swap");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::remove_file(&swap);
                let _ = symlink("real", &swap);
                let _ = std::fs::remove_file(&swap);
                let _ = symlink(&outside, &swap);
            }
        })
    };
    let mut inside_reads = 0;
    for _ in 0..300 {
        match conn
            .request("fs/readFile", json!({"path": p(&root.join("swap/file"))}))
            .await?
            .result
        {
            Some(result) => {
                assert_eq!(
                    unb64(&result["dataBase64"]),
                    b"inside",
                    "read through the outside link"
                );
                inside_reads += 1;
            }
            None => continue,
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().expect("swapper thread");
    // A relative link to a directory inside the root is no escape: those reads work.
    assert!(
        inside_reads > 0,
        "no read went through while the link pointed inside"
    );
    Ok(())
}

#[tokio::test]
async fn files_over_512_mib_are_refused_by_read_file() -> TestResult {
    let conn = ready(Transport::WebSocket, &[]).await?;
    let dir = tempfile::tempdir()?;
    let huge = dir.path().join("sparse");
    // Sparse: takes no disk space, but reports 512 MiB + 1 byte.
    std::fs::File::create(&huge)?.set_len(512 * 1024 * 1024 + 1)?;
    let error = failure(&conn, "fs/readFile", json!({"path": p(&huge)})).await?;
    assert_eq!(error.code, INVALID_REQUEST, "{error}");
    Ok(())
}

#[tokio::test]
async fn devices_fifos_and_copies_onto_themselves_are_refused_without_hanging() -> TestResult {
    let conn = ready(Transport::WebSocket, &[]).await?;
    let dir = tempfile::tempdir()?;
    // A device reports size 0 and never ends: reading it would exhaust memory.
    let error = failure(&conn, "fs/readFile", json!({"path": "/dev/zero"})).await?;
    assert_eq!(error.code, INVALID_REQUEST, "{error}");
    // A FIFO with no writer would block the open forever.
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo)?;
    let error = failure(&conn, "fs/readFile", json!({"path": p(&fifo)})).await?;
    assert_eq!(error.code, INVALID_REQUEST, "{error}");
    let error = failure(
        &conn,
        "fs/writeFile",
        json!({"path": p(&fifo), "dataBase64": b64(b"x")}),
    )
    .await?;
    // The non-blocking open of a FIFO without a reader fails with ENXIO, which is none
    // of the kinds docs/protocol.md §7 names: "others → -32603".
    assert_eq!(
        error.code, INTERNAL_ERROR,
        "answered instead of blocking on a reader: {error}"
    );
    // Copying a file onto itself (directly or through a link) must not truncate it.
    let file = dir.path().join("file");
    std::fs::write(&file, "precious")?;
    symlink(dir.path(), dir.path().join("alias"))?;
    for destination in [file.clone(), dir.path().join("alias/file")] {
        let params = json!({"sourcePath": p(&file), "destinationPath": p(&destination)});
        let error = failure(&conn, "fs/copy", params).await?;
        assert_eq!(error.code, INVALID_REQUEST, "{error}");
        assert_eq!(std::fs::read_to_string(&file)?, "precious");
    }
    Ok(())
}

/// Deeper than the ~14 000 levels that once overflowed a worker's stack and aborted the
/// server. Paths this deep are far longer than PATH_MAX, so the test builds and checks
/// the trees by descending with directory handles.
const DEEP: usize = 15_000;

/// How long one fs call on a `DEEP` tree may take (it takes a fraction of that).
const DEEP_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Builds `name/d/d/…/d` (`depth` levels of `d`) under `parent`, with a file `leaf` and a
/// relative link `link` to it at the bottom.
fn build_chain(parent: &Dir, name: &str, depth: usize) -> std::io::Result<()> {
    parent.create_dir(name)?;
    let mut dir = parent.open_dir(name)?;
    for _ in 0..depth {
        dir.create_dir("d")?;
        dir = dir.open_dir("d")?;
    }
    dir.write("leaf", b"bottom")?;
    dir.symlink_contents("leaf", "link")
}

/// The depth of a chain built by [`build_chain`], its leaf's content and its link's
/// target; `None` if `name` does not exist.
fn inspect_chain(
    parent: &Dir,
    name: &str,
) -> std::io::Result<Option<(usize, Vec<u8>, std::path::PathBuf)>> {
    let mut dir = match parent.open_dir_nofollow(name) {
        Ok(dir) => dir,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut depth = 0;
    loop {
        match dir.open_dir_nofollow("d") {
            Ok(next) => {
                dir = next;
                depth += 1;
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => break,
            Err(err) => return Err(err),
        }
    }
    Ok(Some((
        depth,
        dir.read("leaf")?,
        dir.read_link_contents("link")?,
    )))
}

/// Removes chains built by [`build_chain`] when dropped, without recursion (each step
/// lifts `name/d` up one level), so a failed test does not leave `tempfile` a tree its
/// recursive removal would overflow the test thread's stack on.
struct Chains<'a> {
    parent: &'a Dir,
    names: &'a [&'a str],
}

impl Drop for Chains<'_> {
    fn drop(&mut self) {
        for name in self.names {
            let lifted = format!("{name}.lifted");
            while self
                .parent
                .rename(format!("{name}/d"), self.parent, &lifted)
                .is_ok()
            {
                let _ = self.parent.remove_dir(name);
                let _ = self.parent.rename(&lifted, self.parent, name);
            }
            let _ = self.parent.remove_file(format!("{name}/leaf"));
            let _ = self.parent.remove_file(format!("{name}/link"));
            let _ = self.parent.remove_dir(name);
        }
    }
}

/// A second client with a running process, to show that the server outlives the deep
/// call: the client is still served and its process still runs.
async fn bystander(server: &ExecServer, cwd: &Path) -> Result<Connection, HarnessError> {
    let other = server.connect().await?;
    let session = other.initialize(CLIENT).await?;
    session
        .start_with(spec("sleeper", ["sleep", "1000"]).cwd(p(cwd)))
        .await?;
    Ok(other)
}

async fn bystander_still_served(other: &Connection) -> TestResult {
    let read = other
        .request("process/read", json!({"processId": "sleeper"}))
        .result()
        .await?;
    assert_eq!(read["exited"], false, "the other client's process runs on");
    other.call(&EnvironmentInfoParams {}).await?;
    Ok(())
}

/// A temporary directory for a `DEEP` tree, in memory where the machine has `/dev/shm`:
/// on a disk mounted with `discard` every rmdir waits for the device (about 2.5 ms here,
/// 40 s for the tree, as long as `rm -rf` takes), which would only measure the disk.
fn deep_tempdir() -> std::io::Result<tempfile::TempDir> {
    match Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::tempdir_in(shm),
        _ => tempfile::tempdir(),
    }
}

/// The servers the deep-tree tests run against: unconfined, and confined to `root`.
fn unconfined_and_confined(root: &Path) -> [Vec<String>; 2] {
    [vec![], vec!["--fs-root".to_owned(), p(root)]]
}

#[tokio::test]
async fn a_tree_deeper_than_any_stack_is_removed_and_the_server_serves_on() -> TestResult {
    let base = deep_tempdir()?;
    let root = std::fs::canonicalize(base.path())?;
    let handle = Dir::open_ambient_dir(&root, cap_std::ambient_authority())?;
    let _cleanup = Chains {
        parent: &handle,
        names: &["deep"],
    };
    for args in unconfined_and_confined(&root) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let conn = ready(Transport::WebSocket, &args).await?;
        let other = bystander(conn.server(), &root).await?;
        build_chain(&handle, "deep", DEEP)?;
        let started = std::time::Instant::now();
        let id = conn
            .send_request("fs/remove", json!({"path": p(&root.join("deep"))}))
            .await?;
        conn.response_within(&id, DEEP_WAIT).await?.into_result()?;
        eprintln!(
            "fs/remove of {DEEP} levels {args:?}: {:.2} s",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(inspect_chain(&handle, "deep")?, None, "{args:?}: removed");
        bystander_still_served(&other).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_tree_deeper_than_any_stack_is_copied_and_the_server_serves_on() -> TestResult {
    let base = deep_tempdir()?;
    let root = std::fs::canonicalize(base.path())?;
    let handle = Dir::open_ambient_dir(&root, cap_std::ambient_authority())?;
    let _cleanup = Chains {
        parent: &handle,
        names: &["deep", "copy"],
    };
    build_chain(&handle, "deep", DEEP)?;
    for args in unconfined_and_confined(&root) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let conn = ready(Transport::WebSocket, &args).await?;
        let other = bystander(conn.server(), &root).await?;
        let started = std::time::Instant::now();
        let params = json!({"sourcePath": p(&root.join("deep")), "destinationPath": p(&root.join("copy")), "recursive": true});
        let id = conn.send_request("fs/copy", params).await?;
        conn.response_within(&id, DEEP_WAIT).await?.into_result()?;
        eprintln!(
            "fs/copy of {DEEP} levels {args:?}: {:.2} s",
            started.elapsed().as_secs_f64()
        );
        let expected = Some((DEEP, b"bottom".to_vec(), Path::new("leaf").to_owned()));
        assert_eq!(
            inspect_chain(&handle, "copy")?,
            expected,
            "{args:?}: copied"
        );
        assert_eq!(inspect_chain(&handle, "deep")?, expected, "source intact");
        bystander_still_served(&other).await?;
        let id = conn
            .send_request("fs/remove", json!({"path": p(&root.join("copy"))}))
            .await?;
        conn.response_within(&id, DEEP_WAIT).await?.into_result()?;
    }
    Ok(())
}
