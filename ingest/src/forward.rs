//! One writer per session, whatever the producers do: an event whose session's home
//! partition is not the partition it arrived on (a batch mixing sessions, a keyless or
//! mis-keyed message) is not applied here but forwarded, produced to the same topic
//! keyed by its session id into the home partition, where the home's owner applies it
//! like any other event. (Kafka Streams' repartitioning, done in place.)
//!
//! Contract:
//! - [`Router::split`] keeps the events whose home is the arrival partition and groups
//!   the others per session (per [`SessionIdentity`]: project and session id); the home
//!   is [`Partitioner::home_of`] of the session id with the topic's partition count, so
//!   it must be the producers' partitioner (`KAFKA_PARTITIONER`). Two projects' sessions
//!   of one id share a home; each forwarded event keeps its `projectId`, so the home's
//!   owner applies it to its own project's session;
//! - [`Forwarder::settle`] returns only when every forwarded event is acknowledged by
//!   the broker (`acks=all`), and the worker calls it before it commits the offset of
//!   any message that carried one: an event is committed away from the partition it
//!   arrived on only once it is durable in its home partition. A crash before that
//!   replays the carrying message and forwards the event again; the home's owner drops
//!   the copy as a duplicate `(projectId, sessionId, index)`;
//! - a delivery that librdkafka gives up on (after its own retries, `message.timeout.ms`)
//!   is an error that stops the worker without committing;
//! - the producer exists only while it has work: it is created for the first forward
//!   and released once it has sent nothing for [`PRODUCER_IDLE_RELEASE`] with every
//!   delivery acknowledged (producers that key by session never need it, and an idle
//!   librdkafka producer's polling thread costs CPU every second).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use sessions_events::event::{encode_event, Event, MAX_MESSAGE_BYTES};
use sessions_events::identity::SessionIdentity;

use crate::home_cache::HomeCache;
use crate::partitioner::Partitioner;
use crate::settings::IngestSettings;

/// Decides, per event, whether it is applied here or forwarded to its home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Router {
    pub partitioner: Partitioner,
    pub partition_count: u32,
}

/// The events of one session to forward to its home partition.
#[derive(Debug, PartialEq, Eq)]
pub struct Forward<'a> {
    pub home: i32,
    pub identity: SessionIdentity,
    pub events: Vec<Event<'a>>,
}

impl Router {
    /// Splits `events` (arrived on `partition`) into the ones applied here and the
    /// ones to forward, grouped per session. Order within each is kept. When every
    /// event is at home (producers that key by session), `events` is returned as is.
    pub fn split<'a>(
        &self,
        events: Vec<Event<'a>>,
        partition: i32,
        homes: &mut HomeCache,
    ) -> (Vec<Event<'a>>, Vec<Forward<'a>>) {
        if self.all_local(&events, partition, homes) {
            return (events, Vec::new());
        }
        let mut local = Vec::with_capacity(events.len());
        let mut foreign: BTreeMap<SessionIdentity, Forward<'a>> = BTreeMap::new();
        for event in events {
            let home = homes.home(*self, event.session_id);
            if home == partition {
                local.push(event);
            } else {
                foreign
                    .entry(event.identity())
                    .or_insert_with(|| Forward {
                        home,
                        identity: event.identity(),
                        events: Vec::new(),
                    })
                    .events
                    .push(event);
            }
        }
        (local, foreign.into_values().collect())
    }

    /// Whether every event of `events` is at home on `partition` (no allocation).
    pub fn all_local(&self, events: &[Event<'_>], partition: i32, homes: &mut HomeCache) -> bool {
        events
            .iter()
            .all(|event| homes.home(*self, event.session_id) == partition)
    }

    pub fn home_of(&self, session_id: u64) -> i32 {
        self.partitioner.home_of(session_id, self.partition_count)
    }
}

/// One session's events encoded as messages of at most [`MAX_MESSAGE_BYTES`] (the limit
/// the home's decoder applies): batches of whole events, and an event alone as one
/// object, which is never longer than the message it arrived in.
pub fn encode_messages(events: &[Event<'_>]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut batch: Vec<u8> = Vec::new();
    let mut batch_events = 0;
    for event in events {
        let encoded = encode_event(event);
        if batch_events > 0 && batch.len() + encoded.len() + 2 > MAX_MESSAGE_BYTES {
            messages.push(close_batch(std::mem::take(&mut batch), batch_events));
            batch_events = 0;
        }
        batch.push(if batch_events == 0 { b'[' } else { b',' });
        batch.extend_from_slice(&encoded);
        batch_events += 1;
    }
    if batch_events > 0 {
        messages.push(close_batch(batch, batch_events));
    }
    messages
}

/// `[a,b` → `[a,b]`; a batch of one → the bare object.
fn close_batch(mut batch: Vec<u8>, events: usize) -> Vec<u8> {
    if events == 1 {
        batch.remove(0);
        return batch;
    }
    batch.push(b']');
    batch
}

/// One session's events, encoded, waiting to be sent.
struct Queued {
    carried_on: i32,
    home: i32,
    key: String,
    payloads: Vec<Vec<u8>>,
}

/// How long the producer stays after its last send once every delivery is
/// acknowledged.
pub const PRODUCER_IDLE_RELEASE: Duration = Duration::from_secs(30);

/// The producer of forwarded events (while it has work), the forwards not sent yet and
/// the deliveries not yet acknowledged.
pub struct Forwarder {
    config: ClientConfig,
    producer: Option<FutureProducer>,
    /// When the producer last sent.
    last_send: Instant,
    topic: String,
    queued: Vec<Queued>,
    /// `(partition the carrying message arrived on, delivery)`.
    in_flight: Vec<(i32, DeliveryFuture)>,
    /// The homes of the sessions seen lately.
    homes: HomeCache,
}

impl Forwarder {
    pub fn new(settings: &IngestSettings) -> anyhow::Result<Forwarder> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.kafka_brokers)
            .set("client.id", "sessions-ingest-forwarder")
            // Every in-sync replica has a forward before it counts as acknowledged, and
            // a retry across a leader change cannot write it twice or out of order.
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "60000")
            // Room for a message of the contract's largest size and its framing; the
            // queue holds a few such messages (more waits for deliveries).
            .set("message.max.bytes", (2 * MAX_MESSAGE_BYTES).to_string())
            .set(
                "queue.buffering.max.kbytes",
                ((8 * MAX_MESSAGE_BYTES) >> 10).to_string(),
            );
        // Checked now (a bad setting fails the start), then released until needed.
        drop(config.create::<FutureProducer>()?);
        Ok(Forwarder {
            config,
            producer: None,
            last_send: Instant::now(),
            topic: settings.kafka_topic.clone(),
            queued: Vec::new(),
            in_flight: Vec::new(),
            homes: HomeCache::default(),
        })
    }

    /// Keeps the events of `events` (arrived on `partition`) that are at home here and
    /// queues the others for their homes; returns the kept ones and how many were
    /// queued.
    pub fn keep_local<'a>(
        &mut self,
        router: Router,
        events: Vec<Event<'a>>,
        partition: i32,
    ) -> (Vec<Event<'a>>, u64) {
        let (local, foreign) = router.split(events, partition, &mut self.homes);
        let mut forwarded = 0;
        for forward in foreign {
            forwarded += forward.events.len() as u64;
            self.queue(partition, forward);
        }
        (local, forwarded)
    }

    /// Queues one session's events (of a message from partition `carried_on`) for its
    /// home partition, keyed by its session id (the events carry their project);
    /// [`Forwarder::send_queued`] sends them.
    pub fn queue(&mut self, carried_on: i32, forward: Forward<'_>) {
        self.queued.push(Queued {
            carried_on,
            home: forward.home,
            key: forward.identity.session_id.to_string(),
            payloads: encode_messages(&forward.events),
        });
    }

    /// Hands the queued forwards to the producer, waiting for earlier deliveries only
    /// when its queue is full.
    pub async fn send_queued(&mut self) -> Result<(), KafkaError> {
        let messages = std::mem::take(&mut self.queued)
            .into_iter()
            .flat_map(|queued| {
                let Queued {
                    carried_on,
                    home,
                    key,
                    payloads,
                } = queued;
                payloads
                    .into_iter()
                    .map(move |payload| (carried_on, home, key.clone(), payload))
            });
        for (carried_on, home, key, payload) in messages {
            if self.producer.is_none() {
                self.producer = Some(self.config.create()?);
            }
            self.last_send = Instant::now();
            loop {
                let record = FutureRecord::to(&self.topic)
                    .partition(home)
                    .key(&key)
                    .payload(&payload);
                let producer = self.producer.as_ref().expect("created above");
                match producer.send_result(record) {
                    Ok(delivery) => {
                        self.in_flight.push((carried_on, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        self.await_deliveries().await?;
                    }
                    Err((error, _)) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// Sends what is queued and waits until every forwarded event is acknowledged (see
    /// the module contract).
    pub async fn settle(&mut self) -> Result<(), KafkaError> {
        self.send_queued().await?;
        self.await_deliveries().await
    }

    async fn await_deliveries(&mut self) -> Result<(), KafkaError> {
        for (_, delivery) in self.in_flight.drain(..) {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(error),
                Err(_cancelled) => {
                    return Err(KafkaError::Canceled);
                }
            }
        }
        Ok(())
    }

    /// Forgets deliveries of messages from revoked partitions: nothing will be
    /// committed for them here (the events are delivered or not; either is fine, as
    /// the new owner replays and forwards again).
    pub fn forget_partitions(&mut self, partitions: &[i32]) {
        self.queued
            .retain(|queued| !partitions.contains(&queued.carried_on));
        self.in_flight
            .retain(|(carried_on, _)| !partitions.contains(carried_on));
    }

    /// Whether forwards wait to be sent.
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Releases the producer when it has sent nothing for [`PRODUCER_IDLE_RELEASE`]
    /// and nothing waits to be sent or acknowledged (the next forward creates another).
    pub fn release_if_idle(&mut self, now: Instant) {
        if self.producer.is_some()
            && self.queued.is_empty()
            && self.in_flight.is_empty()
            && now.saturating_duration_since(self.last_send) >= PRODUCER_IDLE_RELEASE
        {
            self.producer = None;
            tracing::debug!("forwarding producer released while idle");
        }
    }

    /// Whether a producer is held (tests).
    pub fn holds_producer(&self) -> bool {
        self.producer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessions_events::event::EventKind;

    fn page(session_id: u64, index: u64) -> Event<'static> {
        Event {
            project_id: 1,
            session_id,
            index,
            timestamp: 1,
            kind: EventKind::Page,
            user_id: None,
            start: None,
            texts: Default::default(),
        }
    }

    #[test]
    fn events_at_home_stay_and_the_others_are_grouped_per_session() {
        let router = Router {
            partitioner: Partitioner::Murmur2Random,
            partition_count: 4,
        };
        let sessions: Vec<u64> = (1..=40).collect();
        let here = router.home_of(sessions[0]);
        let events: Vec<Event<'static>> = sessions
            .iter()
            .flat_map(|session| [page(*session, 0), page(*session, 1)])
            .collect();
        let (local, foreign) = router.split(events.clone(), here, &mut HomeCache::default());
        assert!(local.iter().all(|e| router.home_of(e.session_id) == here));
        assert!(local.iter().any(|e| e.session_id == sessions[0]));
        let forwarded: usize = foreign.iter().map(|f| f.events.len()).sum();
        assert_eq!(local.len() + forwarded, events.len());
        for forward in &foreign {
            assert_ne!(forward.home, here);
            assert_eq!(forward.home, router.home_of(forward.identity.session_id));
            let indexes: Vec<u64> = forward.events.iter().map(|e| e.index).collect();
            assert_eq!(indexes, [0, 1], "order kept, one session per forward");
            assert!(forward
                .events
                .iter()
                .all(|e| e.identity() == forward.identity));
        }
        assert!(!foreign.is_empty(), "40 sessions over 4 partitions");
        assert!(router.all_local(&local, here, &mut HomeCache::default()));
        assert!(!router.all_local(&events, here, &mut HomeCache::default()));
    }

    #[test]
    fn two_projects_sessions_of_one_id_share_a_home_and_are_forwarded_apart() {
        let router = Router {
            partitioner: Partitioner::Murmur2Random,
            partition_count: 4,
        };
        let session = 7;
        let elsewhere = (router.home_of(session) + 1) % 4;
        let theirs = |index| Event {
            project_id: 2,
            ..page(session, index)
        };
        let events = vec![page(session, 1), theirs(0), page(session, 2), theirs(1)];
        let (local, foreign) = router.split(events, elsewhere, &mut HomeCache::default());
        assert!(local.is_empty());
        let forwarded: Vec<(SessionIdentity, i32, Vec<u64>)> = foreign
            .iter()
            .map(|forward| {
                assert!(forward
                    .events
                    .iter()
                    .all(|e| e.identity() == forward.identity));
                let indexes = forward.events.iter().map(|e| e.index).collect();
                (forward.identity, forward.home, indexes)
            })
            .collect();
        let home = router.home_of(session);
        assert_eq!(
            forwarded,
            [
                (SessionIdentity::new(1, session), home, vec![1, 2]),
                (SessionIdentity::new(2, session), home, vec![0, 1]),
            ]
        );
    }

    #[test]
    fn forwards_are_cut_into_messages_the_home_accepts() {
        use sessions_events::event::decode_message;
        // The longest user id a decoded event has, in enough events to fill ~3.4 MiB.
        let big_user = "u".repeat(sessions_shared::read_model::MAX_USER_ID_BYTES);
        let events: Vec<Event<'static>> = (0..10_000)
            .map(|index| Event {
                kind: EventKind::UserId,
                user_id: Some(std::borrow::Cow::Owned(big_user.clone())),
                ..page(7, index)
            })
            .collect();
        let messages = encode_messages(&events);
        assert!(messages.len() >= 3);
        let mut decoded_events = Vec::new();
        for message in &messages {
            assert!(message.len() <= MAX_MESSAGE_BYTES);
            let decoded = decode_message(message);
            assert!(decoded.rejections.is_empty());
            decoded_events.extend(decoded.events.into_iter().map(|e| e.index));
        }
        assert_eq!(decoded_events, (0..10_000).collect::<Vec<u64>>());
        let alone = encode_messages(&events[..1]);
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0][0], b'{', "one event is one object");
    }

    #[test]
    fn with_one_partition_everything_is_local() {
        let router = Router {
            partitioner: Partitioner::Consistent,
            partition_count: 1,
        };
        let (local, foreign) =
            router.split(vec![page(7, 0), page(8, 0)], 0, &mut HomeCache::default());
        assert_eq!(local.len(), 2);
        assert!(foreign.is_empty());
    }
}
