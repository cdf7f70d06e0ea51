//! Every call has a deadline (`ClientOptions::call_timeout`), and a long-poll read gets
//! its `waitMs` on top of it. Against fake stdio "servers" that answer the handshake and
//! then answer late or never.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use exec_client::{ClientError, ClientOptions, ExecServerClient, ExecServerTransport, Method};

/// Answers `initialize` (id 1) and swallows `initialized`.
const HANDSHAKE: &str =
    r#"read a; echo '{"jsonrpc":"2.0","id":1,"result":{"sessionId":"s"}}'; read b; "#;

async fn connect(then: &str, call_timeout: Duration) -> ExecServerClient {
    let transport = ExecServerTransport::StdioCommand {
        program: "sh".into(),
        args: vec!["-c".into(), format!("{HANDSHAKE}{then}")],
        env: BTreeMap::new(),
        cwd: None,
    };
    let options = ClientOptions {
        call_timeout: Some(call_timeout),
        ..ClientOptions::default()
    };
    ExecServerClient::connect(transport, options)
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_call_without_an_answer_times_out_naming_its_method() {
    let limit = Duration::from_millis(200);
    let client = connect("read c; exec sleep 1000", limit).await;
    let began = Instant::now();
    let error = client.terminate("p").await.expect_err("no answer");
    assert!(
        matches!(error, ClientError::Timeout { method: Method::ProcessTerminate, after } if after == limit),
        "{error:?}"
    );
    assert!(error.to_string().contains("process/terminate"), "{error}");
    assert!(began.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_long_poll_read_gets_its_wait_on_top_of_the_call_timeout() {
    // The read (id 2) is answered after 600 ms: past the 300 ms call timeout, within it
    // plus the read's 1 s wait.
    let answer = r#"{"jsonrpc":"2.0","id":2,"result":{"chunks":[],"nextSeq":1,"exited":false,"exitCode":null,"closed":false,"failure":null}}"#;
    let client = connect(
        &format!("read c; sleep 0.6; echo '{answer}'; exec sleep 1000"),
        Duration::from_millis(300),
    )
    .await;
    let read = client
        .read("p", 0, None, Duration::from_secs(1))
        .await
        .expect("the read's wait extends its deadline");
    assert_eq!(read.next_seq, 1);
}
