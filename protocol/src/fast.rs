//! The two messages big enough to be written straight into their buffer instead of
//! going through serde: `process/output` (every byte a process prints) and the
//! `fs/readFile` reply (up to 512 MiB). Each produces exactly what serializing
//! [`ProcessOutput`](crate::ProcessOutput) / [`ReadFileResult`](crate::ReadFileResult)
//! would, as the tests check.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::envelope::PartialReply;
use crate::process::Stream;

/// A `process/output` notification for `data`.
pub fn encode_output_notification(
    process_id: &str,
    seq: u64,
    stream: Stream,
    data: &[u8],
) -> String {
    let mut message = String::with_capacity(data.len().div_ceil(3) * 4 + process_id.len() + 128);
    message.push_str(r#"{"jsonrpc":"2.0","method":"process/output","params":{"processId":"#);
    // A JSON string of a `str` always serializes.
    message.push_str(&serde_json::to_string(process_id).unwrap_or_default());
    message.push_str(r#","seq":"#);
    message.push_str(&seq.to_string());
    message.push_str(r#","stream":""#);
    message.push_str(stream.as_str());
    message.push_str(r#"","chunk":""#);
    BASE64.encode_string(data, &mut message);
    message.push_str("\"}}");
    message
}

/// Builds an `fs/readFile` reply while the file is read, block by block: the file's
/// bytes are never held whole, only their encoding.
pub struct ReadFileReply {
    reply: PartialReply,
    /// Up to 2 bytes not yet encoded: base64 encodes 3 bytes at a time, and only the
    /// last block may be padded.
    carry: Vec<u8>,
}

impl ReadFileReply {
    /// `data_len`: the expected file size, to size the buffer once.
    pub fn new(data_len: usize) -> Self {
        let mut reply = PartialReply::start(data_len.div_ceil(3) * 4 + 32);
        reply.buffer().push_str(r#"{"dataBase64":""#);
        Self {
            reply,
            carry: Vec::with_capacity(2),
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        if !self.carry.is_empty() {
            let take = (3 - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < 3 {
                return;
            }
            BASE64.encode_string(&self.carry, self.reply.buffer());
            self.carry.clear();
        }
        let whole = data.len() / 3 * 3;
        BASE64.encode_string(&data[..whole], self.reply.buffer());
        self.carry.extend_from_slice(&data[whole..]);
    }

    pub fn finish(mut self) -> PartialReply {
        BASE64.encode_string(&self.carry, self.reply.buffer());
        self.reply.buffer().push_str("\"}");
        self.reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{classify, Message, ProcessOutput, ReadFileResult, RequestId};

    #[test]
    fn output_notifications_decode_with_the_crates_own_type() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let frame = encode_output_notification("p\"1\\", 42, Stream::Stderr, &data);
        let Message::Notification { method, params } = classify(&frame) else {
            panic!("not a notification: {frame}");
        };
        assert_eq!(method, "process/output");
        let output: ProcessOutput = serde_json::from_value(params).expect("decodes");
        assert_eq!(
            output,
            ProcessOutput {
                process_id: "p\"1\\".into(),
                seq: 42,
                stream: Stream::Stderr,
                chunk: data.into(),
            }
        );
    }

    #[test]
    fn a_read_file_reply_decodes_whatever_the_block_sizes() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
        for block in [1, 2, 3, 4, 7, 1000, 2000] {
            let mut reply = ReadFileReply::new(data.len());
            for piece in data.chunks(block) {
                reply.push(piece);
            }
            let frame = reply.finish().with_id(&RequestId::from(9));
            let Message::Response { id, result } = classify(&frame) else {
                panic!("not a response: {frame}");
            };
            assert_eq!(id, RequestId::from(9));
            let result: ReadFileResult = serde_json::from_value(result).expect("decodes");
            assert_eq!(result.data_base64.0, data, "blocks of {block}");
        }
    }
}
