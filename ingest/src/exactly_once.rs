//! # Why every event counts exactly once
//!
//! The argument the worker's code rests on; each step names the code that keeps it.
//!
//! 1. **A session's state is a function of the set of its distinct events.**
//!    `SessionState` (`sessions_shared::session`) picks by `index` or folds order-free,
//!    and drops an index it has already applied. Order, batching and repetition (a
//!    producer's duplicate, a redelivery) cannot change it.
//! 2. **The state carries its own deduplication.** The durable state of a session
//!    (`session_state`) holds the set of applied indexes. Any worker that takes a
//!    session over (after a restart, a rebalance, an eviction) loads that state before
//!    applying anything to it (`Aggregator::missing` → `Sink::load`), so an event
//!    already counted in the durable state is recognised as a duplicate.
//! 3. **Offsets are committed only after the rows that include them are durable.**
//!    A flush writes every session changed since the last flush and every dead letter,
//!    then commits, per partition, the offset after the last message processed
//!    (`consumer`, `pending`). A crash before the commit replays from the last commit:
//!    by (2) and (1) the replay rebuilds the same states and rewrites the same rows
//!    (idempotent: same versions, ReplacingMergeTree). Nothing is lost, because nothing
//!    is committed before it is written; nothing is double counted, because replays
//!    are deduplicated by (2). Messages are processed in fetch order, so no commit
//!    passes a message that was held back or parked.
//! 4. **Rows under stale keys are hidden, even across crashes.** When a session's key
//!    (project, userId, startTs) changes, the next flush tombstones each old key once
//!    (again only if the session came back to it). Every key is recorded in
//!    `session_keys` and in the state *before* any row under it (`sink`), a session
//!    loaded from ClickHouse is always rewritten, and a load tombstones the union of
//!    both lists, so neither a crash between the writes nor a state that lost a merge
//!    to a tied late write of a former owner leaves a stale key visible.
//! 5. **One writer per session, whatever the producers send.** A session's home is the
//!    partition its producers' partitioner (`KAFKA_PARTITIONER`) gives its id. An
//!    event that arrives elsewhere (a batch mixing sessions, a keyless or mis-keyed
//!    message) is not applied there: it is forwarded to its home, and the message that
//!    carried it is committed only once the broker acknowledged the forward
//!    (`forward`). A crash before that replays the carrier and forwards again, and the
//!    copy is a duplicate by (2). So every event of a session is applied by the one
//!    owner of its home partition. On revocation the worker forgets the partition's
//!    sessions, pending offsets, forwards and dead letters without writing them (the
//!    new owner replays from the last commit); a flush being retried is rebuilt from
//!    what is still held, so it never writes a revoked session. Versions only grow
//!    along a home partition's log, so a late write of an older state never replaces a
//!    newer one.
//!
//! Limits: a change of the topic's partition count moves homes (for every keyed Kafka
//! consumer alike); while the workers learn the new count, a session's events can be
//! applied by two workers, which breaks (5) for that session until they agree.
