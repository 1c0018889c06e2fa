//! Dead letters: the `rejected_events` row of one rejected message or batch element,
//! owned from its decode until the flush that writes it (`write`).
//!
//! Contract: a dead letter keeps the rejection's stable reason code and its detail as
//! the decoder wrote them, and at most [`MAX_DEAD_LETTER_PAYLOAD`] bytes of the payload,
//! as text cut on a character boundary. Beside it go the subjects its whole payload
//! names (`sessions_events::event::named_subjects`: projects, sessions and users, read
//! from the parsed content, also past the cut), one [`SubjectRecord`] each in
//! `dead_letter_subjects`, so that a user's deletion finds the dead letter by exact
//! match. A `too_large` payload is not read for subjects (its size is what the limit
//! refuses to process); a deletion matches its stored text instead.

use serde::Serialize;
use sessions_events::event::named_subjects::{named_subjects, NamedSubject};
use sessions_events::event::{RejectReason, Rejection};
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
    /// Who the whole payload names (not a column of `rejected_events`).
    #[serde(skip_serializing)]
    pub subjects: Vec<NamedSubject>,
}

/// A row of `dead_letter_subjects`: one subject a dead letter names, under the dead
/// letter's key.
#[derive(Debug, Row, Serialize)]
pub struct SubjectRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub element: i32,
    pub project_id: u32,
    pub session_id: u64,
    pub user_id: &'a str,
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
            subjects: match rejection.reason {
                RejectReason::TooLarge => Vec::new(),
                _ => named_subjects(rejection.payload),
            },
        }
    }

    /// The `dead_letter_subjects` rows of this dead letter.
    pub fn subject_records(&self) -> impl Iterator<Item = SubjectRecord<'_>> {
        self.subjects.iter().map(move |subject| SubjectRecord {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            element: self.element,
            project_id: subject.project_id,
            session_id: subject.session_id,
            user_id: &subject.user_id,
        })
    }

    /// Roughly what the record holds in memory, for the worker's budget.
    pub fn memory_bytes(&self) -> usize {
        let subjects: usize = self
            .subjects
            .iter()
            .map(|subject| subject.user_id.len() + 48)
            .sum();
        self.payload.len() + self.detail.len() + self.topic.len() + subjects + 64
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

    fn rejection(reason: RejectReason, payload: &[u8]) -> Rejection<'_> {
        Rejection {
            reason,
            detail: String::new(),
            element: Some(3),
            payload,
        }
    }

    #[test]
    fn a_dead_letter_names_the_subjects_of_its_whole_payload() {
        let filler = "x".repeat(MAX_DEAD_LETTER_PAYLOAD);
        let payload =
            format!(r#"{{"projectId":5,"sessionId":9,"ua":"{filler}","userId":"caf\u00e9"}}"#);
        let record = RejectedRecord::new(
            "t".into(),
            1,
            2,
            &rejection(RejectReason::MissingField, payload.as_bytes()),
        );
        assert!(!record.payload.contains("userId"));
        let rows: Vec<_> = record.subject_records().collect();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(
            (row.topic, row.partition, row.offset, row.element),
            ("t", 1, 2, 3)
        );
        assert_eq!(
            (row.project_id, row.session_id, row.user_id),
            (5, 9, "café")
        );
        assert!(record.memory_bytes() > MAX_DEAD_LETTER_PAYLOAD);
    }

    #[test]
    fn a_too_large_payload_is_not_read_for_subjects() {
        let record = RejectedRecord::new(
            "t".into(),
            1,
            2,
            &rejection(RejectReason::TooLarge, br#"{"userId":"u"}"#),
        );
        assert_eq!(record.subject_records().count(), 0);
    }
}
