//! A `process/start` whose child cannot start (docs/protocol.md §6.1): `-32603` naming
//! what failed, the program or the directory, and [ext] `data: {errno, subject}`, on both
//! transports; nothing is left behind, so the id can be used again.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use exec_server_harness::Transport;
use serde_json::json;

/// A regular file without execute permission.
fn non_executable_file() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("not-executable");
    std::fs::write(&file, "#!/bin/sh\necho hi\n").expect("write the file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    dir
}

#[tokio::test]
async fn spawn_failures_name_the_program_or_the_directory_in_message_and_data() -> TestResult {
    let dir = non_executable_file();
    let not_executable = p(&dir.path().join("not-executable"));
    let missing_dir = p(&dir.path().join("no-such-dir"));
    for transport in BOTH {
        let conn = ready(transport, &[]).await?;
        let cases = [
            // (argv[0], cwd, errno, subject, what the message must name)
            (
                "no-such-program-xyz".to_owned(),
                "/".to_owned(),
                libc::ENOENT,
                "program",
                "failed to start no-such-program-xyz: ".to_owned(),
            ),
            (
                not_executable.clone(),
                "/".to_owned(),
                libc::EACCES,
                "program",
                format!("failed to start {not_executable}: "),
            ),
            (
                "/bin/true".to_owned(),
                missing_dir.clone(),
                libc::ENOENT,
                "cwd",
                format!("cannot use cwd {missing_dir}: "),
            ),
            (
                "/bin/true".to_owned(),
                not_executable.clone(),
                libc::ENOTDIR,
                "cwd",
                format!("cannot use cwd {not_executable}: "),
            ),
        ];
        for (program, cwd, errno, subject, names) in cases {
            let what = format!("{transport:?}: {program} in {cwd}");
            let params = json!({"processId": "x", "argv": [program], "cwd": cwd, "env": {"PATH": "/usr/bin:/bin"}});
            let error = failure(&conn, "process/start", params).await?;
            assert_eq!(error.code, INTERNAL_ERROR, "{what}: {error:?}");
            assert!(
                error.message.starts_with(&names),
                "{what}: {:?} should start with {names:?}",
                error.message
            );
            let os_text = std::io::Error::from_raw_os_error(errno).to_string();
            assert!(
                error.message.ends_with(&os_text),
                "{what}: {:?}",
                error.message
            );
            if subject == "cwd" {
                assert!(
                    !error.message.contains("/bin/true"),
                    "{what}: the program is not to blame: {:?}",
                    error.message
                );
            }
            assert_eq!(
                error.data,
                Some(json!({"errno": errno, "subject": subject})),
                "{what}"
            );
        }
        // Nothing was left behind: the id is free.
        conn.request(
            "process/start",
            json!({"processId": "x", "argv": ["/bin/true"], "cwd": "/", "env": {}}),
        )
        .result()
        .await?;
    }
    Ok(())
}

/// Under `--fs-root` the directory is opened beneath the root; a missing one is still
/// blamed on the directory.
#[tokio::test]
async fn a_missing_cwd_under_fs_root_is_blamed_on_the_directory() -> TestResult {
    let root = tempfile::tempdir().expect("temporary directory");
    let root_path = p(root.path());
    let missing = format!("{root_path}/missing");
    let conn = ready(Transport::Stdio, &["--fs-root", &root_path]).await?;
    let params = json!({"processId": "x", "argv": ["/bin/true"], "cwd": missing, "env": {}});
    let error = failure(&conn, "process/start", params).await?;
    assert_eq!(error.code, INTERNAL_ERROR, "{error:?}");
    assert!(
        error
            .message
            .starts_with(&format!("cannot use cwd {missing}: ")),
        "{error:?}"
    );
    assert_eq!(
        error.data,
        Some(json!({"errno": libc::ENOENT, "subject": "cwd"}))
    );
    Ok(())
}
