//! Dead letters: the `rejected_events` row of one rejected message or batch element,
//! owned from its decode until the flush that writes it (`write`).
//!
//! Contract: a dead letter keeps the rejection's stable reason code and its detail as
//! the decoder wrote them, and at most [`MAX_DEAD_LETTER_PAYLOAD`] bytes of the payload,
//! as text cut on a character boundary.

use serde::Serialize;
use sessions_events::event::Rejection;
use sessions_shared::clickhouse::Row;
use sessions_shared::clock::epoch_seconds;

/// Dead-letter payloads are cut to this many bytes (the operations contract).
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 64 * 1024;

/// One rejected message or batch element, owned until its flush.
#[derive(Clone, Debug, Row, Serialize)]
pub struct RejectedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub element: i32,
    pub reason: &'static str,
    pub detail: String,
    pub payload: String,
    pub received_at: u32,
}

impl RejectedRecord {
    /// The dead letter of one rejection of the message at `partition`/`offset`.
    pub fn new(topic: String, partition: i32, offset: i64, rejection: &Rejection<'_>) -> Self {
        RejectedRecord {
            topic,
            partition,
            offset,
            element: rejection.element.map_or(-1, |position| position as i32),
            reason: rejection.reason.code(),
            detail: rejection.detail.clone(),
            payload: Self::truncate_payload(rejection.payload),
            received_at: epoch_seconds(),
        }
    }

    /// The payload as text, cut to [`MAX_DEAD_LETTER_PAYLOAD`] bytes (invalid UTF-8 is
    /// replaced, as ClickHouse `String` columns are read back as text by most tools).
    pub fn truncate_payload(payload: &[u8]) -> String {
        let cut = &payload[..payload.len().min(MAX_DEAD_LETTER_PAYLOAD)];
        let text = String::from_utf8_lossy(cut).into_owned();
        if text.len() <= MAX_DEAD_LETTER_PAYLOAD {
            return text;
        }
        let mut end = MAX_DEAD_LETTER_PAYLOAD;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_payloads_are_cut_on_a_character_boundary() {
        let big = "é".repeat(MAX_DEAD_LETTER_PAYLOAD);
        let cut = RejectedRecord::truncate_payload(big.as_bytes());
        assert!(cut.len() <= MAX_DEAD_LETTER_PAYLOAD);
        assert_eq!(cut.len(), MAX_DEAD_LETTER_PAYLOAD);
        assert_eq!(RejectedRecord::truncate_payload(b"{bad"), "{bad");
        assert_eq!(RejectedRecord::truncate_payload(b"\xff"), "\u{fffd}");
    }
}
