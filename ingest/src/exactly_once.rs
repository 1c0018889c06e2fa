//! # Why every event counts exactly once
//!
//! The argument the worker's code rests on; each step names the code that keeps it.
//!
//! 0. **A session is its project and its id.** A session is identified by
//!    `(projectId, sessionId)` (`SessionIdentity`, `sessions_events::identity`), and
//!    everything below is per identity: the worker holds (`Aggregator`), deduplicates,
//!    forwards (`forward`: the events keep their project), stores and loads
//!    (`project_session_state`, `project_session_applied`, `session_keys`, all read by
//!    `(project_id, session_id)`), marks deleted and erases (`deleted_sessions`,
//!    `erasure`) sessions by both. So two projects' sessions of one id are two
//!    sessions, each exact by the steps below, and no event of one project changes,
//!    moves, counts in or reveals the other's. A session id alone only chooses a home
//!    partition (5): two projects' sessions of one id share it, which changes nothing.
//! 1. **A session's state is a function of the set of its distinct events.**
//!    `SessionState` (`sessions_events::session`) picks by `index` or folds order-free,
//!    and drops an index it has already applied. Order, batching and repetition (a
//!    producer's duplicate, a redelivery) cannot change it.
//! 2. **The state carries its own deduplication.** The durable state of a session
//!    (`project_session_state`) holds the set of applied indexes. Any worker that takes a
//!    session over (after a restart, a rebalance, an eviction) loads that state before
//!    applying anything to it (`Aggregator::missing` → `Sink::load`), so an event
//!    already counted in the durable state is recognised as a duplicate.
//! 3. **Offsets are committed only after the rows that include them are durable.**
//!    A flush writes every session changed since the last flush and every dead letter,
//!    then stores, per partition, the offset after the last message processed
//!    (`consumer`, `pending`), which librdkafka commits in the background, before it
//!    hands a revoked partition over, and at close (`kafka`: only stored offsets are
//!    ever committed). A crash before the commit replays from the last commit:
//!    by (2) and (1) the replay rebuilds the same states and rewrites the same rows
//!    (idempotent: same versions, ReplacingMergeTree). Nothing is lost, because nothing
//!    is committed before it is written; nothing is double counted, because replays
//!    are deduplicated by (2). Messages are processed in fetch order, so no commit
//!    passes a message that was held back or parked.
//! 4. **Rows under stale keys are hidden, even across crashes.** When a session's key
//!    (project, userId, startTs: the project never changes, being part of the identity)
//!    changes, the next flush tombstones each old key once
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
//!    copy is a duplicate by (2) (the copy keeps its `projectId`, so it is a duplicate
//!    in its own project's session only). So every event of a session is applied by the one
//!    owner of its home partition. On revocation the worker forgets the partition's
//!    sessions, pending offsets, forwards and dead letters without writing them (the
//!    new owner replays from the last commit); a flush being retried is rebuilt from
//!    what is still held, so it never writes a revoked session. Versions only grow
//!    along a home partition's log, so a late write of an older state never replaces a
//!    newer one.
//!
//!    - *Incremental assignment* (`KAFKA_GROUP_PROTOCOL` `cooperative` or `consumer`,
//!      the default being cooperative-sticky): a rebalance revokes only the partitions
//!      that change owner, and the worker keeps reading, flushing and committing the
//!      others. Nothing above needs every partition revoked at once: what is dropped,
//!      replayed and committed is kept per partition (`Aggregator::drop_partitions`,
//!      `Pending::forget_partitions`, `Forwarder::forget_partitions`; a session lives
//!      in its home partition only, so dropping a partition's sessions touches no
//!      other's). The callbacks run inside a poll of the loop, never during a flush:
//!      a flush under way when the broker decides a revocation completes first, and
//!      its commit carries only partitions still owned (`forget_revoked` runs after
//!      the write and before the commit). The broker gives a revoked partition to its
//!      new owner only after this member has acknowledged the revocation (its next
//!      poll: the classic protocol's second join round, KIP-848's member epoch), so the
//!      new owner's loads start after every write of this member for that partition
//!      that was acknowledged. A member that lost its partitions without being asked
//!      (session expired, a long ClickHouse outage past `max.poll.interval.ms`) may
//!      still write late: that is the former owner's late write above, which versions
//!      and (7) absorb. The worker never assumes a partition's offsets restart at a
//!      rebalance: an assigned partition resumes from its committed offset, whoever
//!      committed it last.
//!
//! 6. **On a cluster, a load still sees every acknowledged flush.** Steps (2) to (4)
//!    rest on "a load sees every write acknowledged before it". In cluster mode
//!    (`CLICKHOUSE_CLUSTER`) every write goes through a `Distributed` table with
//!    `insert_distributed_sync = 1` and `insert_quorum = CLICKHOUSE_INSERT_QUORUM`
//!    (default 2): the INSERT returns only when the rows are on that many replicas of
//!    their shard, so losing the replica that took it loses nothing acknowledged.
//!    Loads read with `select_sequential_consistency = 1` (`Store::read_your_writes`):
//!    a replica that has not caught up with the last quorum write refuses (code 289,
//!    retried on another replica or later) instead of answering without it.
//!    - *Cost:* each INSERT waits for a second replica to fetch the part (one
//!      interserver round trip per shard touched), and 18.16 runs one quorum INSERT
//!      per replicated table at a time: a concurrent one is refused (code 286) and
//!      `Store` retries it after a random pause of 5–50 ms within the request's time
//!      bound, so several workers serialise their flushes per table and shard.
//!    - *Failure behaviour:* with fewer live replicas in a shard than the quorum, the
//!      INSERT fails (codes 285/319, transient): the flush is retried with back-pressure
//!      and nothing is committed, exactly as in a ClickHouse outage; a quorum INSERT
//!      that timed out may still complete later, which is a write of rows the retry
//!      writes again (idempotent, step 3). A whole shard down fails every load and
//!      flush that touches it, which pauses the worker the same way.
//!
//! 7. **A large applied set is stored as deltas, and any chain rebuilds it.** A set
//!    of more than `INLINE_MAX_RANGES` ranges is not in the state but in
//!    `project_session_applied` chunks `(version, base_version, ranges)` (`durable_state`): a
//!    checkpoint (base 0, the whole set) or a delta (the indexes applied since the
//!    writer's last durable write at `base_version`). The state names its checkpoint;
//!    a load takes the winning state (version v), the chunks between its checkpoint
//!    and v, and the union of any chain of them from a checkpoint to v.
//!    - *One set per version.* By (5) a session's events are applied by the owners of
//!      one partition, each in log order from a committed offset, onto a loaded state
//!      that is itself such a state: every state any writer holds is the set of
//!      distinct events of a prefix of that log. Prefixes are nested, so two of them
//!      with the same number of distinct events have the same set: `set(v)` depends
//!      on v alone, whichever owner, flush boundaries or crashes produced it (a former
//!      owner's late write included). So a chunk `(v, b)` from any writer holds
//!      exactly `set(v) \ set(b)`, and `set(b) ∪ chunk = set(v)`: every chain from a
//!      checkpoint to v unites to `set(v)`, even one mixing two owners' chunks. Equal
//!      keys `(project, session, version, base)` hold equal sets, so a merge keeping any
//!      is safe.
//!    - *No state without its chain.* A flush writes its chunks before its states
//!      (`sink`), and a delta's base is a version whose chain was durable (the
//!      writer's last acknowledged flush, or the chain it loaded); nothing deletes a
//!      chunk. So the winning state's writer's own chain, from the checkpoint the
//!      state names, is among the chunks read, whatever state wins a tie.
//!    - *Orphans, retries, replays.* Chunks written by a flush whose state never was
//!      are chunks of a true `(v, b)`: harmless, used or not. A retried flush plans the
//!      same chunk from the same durable chain (a pure function); a replay writes
//!      `(v, b)` again, the same set.
//!    - *Checked.* A load verifies that the union holds exactly v indexes (and that an
//!      inline state holds as many as its version); otherwise, or when no chain
//!      reaches v, the state is corrupt and the worker stops without committing, as for
//!      a state that does not decode. By the above this happens only outside (5).
//!    - *Bounded.* A delta is written unless the deltas since the checkpoint would
//!      outweigh it (ranges, plus a per-row weight), then a checkpoint: a flush writes
//!      in proportion to what it applied, a load reads at most the checkpoint and as
//!      much again (plus other owners' chunks in that version range), and the bytes
//!      written over a session's life stay within a constant factor of its events'.
//!
//! 8. **Deleted stays deleted.** A user deletion job (`sessions_control::jobs::deletion`)
//!    first records each session it erases in `deleted_sessions`, then waits a settle
//!    time, then erases the session's rows everywhere. Right before every attempt to
//!    write a flush, the worker reads which of the flush's sessions are recorded there
//!    and drops them from memory unwritten (`Worker::forget_deleted`); their events'
//!    offsets are committed as processed. So:
//!    - *no event of a deleted session is written once its record is readable*: late,
//!      redelivered, duplicate or new, on any worker, after restarts and rebalances
//!      (a replay reaches the same check before any write); the record is never removed;
//!    - *a flush that checked just before the record landed* is checked again after
//!      its write (`Worker::erase_raced`, before any commit): if a record is readable
//!      now, the worker erases that session's rows itself and waits for it; if not, the
//!      record landed after the rows were acknowledged, so the rows exist before the
//!      job's erasing mutations (created after the record, and after the settle time)
//!      and are erased with the rest. The job's verification then finds nothing of it;
//!    - *what was already durable* (states, keys, chunks) is erased by the job, so a
//!      later load finds no state, and the session would start from nothing, which
//!      is dropped at the check like any other event of it;
//!    - *exactness elsewhere is untouched*: dropping a session writes nothing and
//!      changes no other session; a session first seen after the job is not
//!      recorded and is kept.
//!    - *Per project:* a record names a project and a session id, and is matched by
//!      both; a deletion in one project never drops or erases another project's
//!      session of the same id.
//!    - *Cost:* two reads of `deleted_sessions` by `(project_id, session_id)` per flush; mutations
//!      only when a deletion raced that very flush.
//!    - *Limit:* a worker killed between a write that raced a deletion and its second
//!      read, when that write also landed after the job's mutations (a flush slower
//!      than `DELETION_SETTLE_MS`, default 30 s), leaves that session's rows; the
//!      replay drops the session at the first check and does not see them.
//!
//! Limits: a change of the topic's partition count moves homes (for every keyed Kafka
//! consumer alike); while the workers learn the new count, a session's events can be
//! applied by two workers, which breaks (5) for that session until they agree (and for
//! a session whose set is chained, (7)'s check may then find it corrupt and stop the
//! worker rather than let it count inexactly).
