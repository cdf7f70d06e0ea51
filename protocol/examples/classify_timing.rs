//! Times `classify` on a 64 MiB `process/write` frame (one huge base64 string), the
//! frame size at which the duplicate-key and value-count checks must not cost much.
//! `cargo run --release -p exec-protocol --example classify_timing`

use std::time::Instant;

fn main() {
    let chunk = "QUJD".repeat(64 * 1024 * 1024 / 4);
    let frame = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"process/write","params":{{"processId":"p","chunk":"{chunk}","writeId":"w"}}}}"#
    );
    let mut best = f64::MAX;
    for _ in 0..7 {
        let started = Instant::now();
        let message = exec_protocol::classify(&frame);
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        assert!(matches!(message, exec_protocol::Message::Request { .. }));
        best = best.min(elapsed);
    }
    println!(
        "classify, {} MiB frame: best of 7 {best:.1} ms",
        frame.len() >> 20
    );
}
