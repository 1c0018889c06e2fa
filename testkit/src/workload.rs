//! A seeded, realistic stream of tracker events (as the event contract describes
//! them), with the rows the read model must end up holding, computed independently of
//! the worker's code.
//!
//! Used by the producer tool (demo traffic, benchmarks) and by the tests. Each session
//! has a `session_start` (a few don't: their `startTs` is their smallest timestamp),
//! pages, clicks, inputs, errors, custom events, often a `session_end`; some set their
//! user id mid-session. Delivery is shuffled within each session, sessions are
//! interleaved, some messages are batches (arrays), ~5% of events are sent twice.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sessions_shared::read_model::Session;

/// User agents with the families uap-core gives them (checked by a test).
pub const AGENTS: &[(&str, &str, &str, &str)] = &[
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.77 Safari/537.36",
        "Mac OS X",
        "Chrome",
        "",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:89.0) Gecko/20100101 Firefox/89.0",
        "Windows",
        "Firefox",
        "",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 14_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.1.1 Mobile/15E148 Safari/604.1",
        "iOS",
        "Mobile Safari",
        "iPhone",
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:89.0) Gecko/20100101 Firefox/89.0",
        "Ubuntu",
        "Firefox",
        "",
    ),
];

const COUNTRIES: &[&str] = &["IN", "fr", "US", "de", "BR", "jp"];

#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub project_id: u32,
    pub sessions: usize,
    /// Average events per session (at least 2).
    pub events_per_session: usize,
    pub users: usize,
    /// Share of events sent a second time.
    pub duplicate_rate: f64,
    /// Event time of the first session, epoch ms.
    pub start_ts: i64,
    /// Prefix of user ids (`<prefix><n>@example.com`).
    pub user_prefix: String,
    /// First session id (ids are consecutive from here).
    pub first_session_id: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 42,
            project_id: 1,
            sessions: 100,
            events_per_session: 20,
            users: 20,
            duplicate_rate: 0.05,
            start_ts: 1_700_000_000_000,
            user_prefix: "user-".into(),
            first_session_id: 4_813_018_042_986_240,
        }
    }
}

/// One session: its distinct events in index order, and its expected row.
#[derive(Clone, Debug)]
pub struct PlannedSession {
    pub session_id: u64,
    pub events: Vec<Value>,
    pub expected: Session,
}

/// A Kafka message: key (session id) and JSON value.
#[derive(Clone, Debug)]
pub struct PlannedMessage {
    pub key: String,
    pub payload: Vec<u8>,
}

pub struct Workload {
    pub sessions: Vec<PlannedSession>,
    pub messages: Vec<PlannedMessage>,
    /// Events in `messages`, duplicates included.
    pub events_sent: usize,
}

impl Workload {
    pub fn generate(config: &WorkloadConfig) -> Workload {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let sessions: Vec<PlannedSession> = (0..config.sessions)
            .map(|n| plan_session(config, n, &mut rng))
            .collect();
        let (messages, events_sent) = deliver(&sessions, config.duplicate_rate, &mut rng);
        Workload {
            sessions,
            messages,
            events_sent,
        }
    }

    /// The same events (duplicates included) as hostile producers would send them
    /// ([`scramble`]). Exactness must not depend on keys (the event contract).
    pub fn scrambled_messages(
        &self,
        seed: u64,
        keyless_share: f64,
    ) -> Vec<(Option<String>, Vec<u8>)> {
        let payloads = self
            .messages
            .iter()
            .map(|message| serde_json::from_slice(&message.payload).expect("workload JSON"));
        scramble(payloads.collect(), seed, keyless_share)
    }

    /// The hot-path benchmarks' input: the standard workload's shape (seed 1, 2,000
    /// sessions, ~50 events each, 400 users, ~5% duplicates, shuffled within sessions)
    /// with one event per message, to measure per-event cost.
    pub fn benchmark_events() -> Vec<Vec<u8>> {
        let workload = Workload::generate(&WorkloadConfig {
            seed: 1,
            sessions: 2_000,
            events_per_session: 50,
            users: 400,
            ..WorkloadConfig::default()
        });
        let mut messages = Vec::new();
        for message in &workload.messages {
            match serde_json::from_slice(&message.payload).expect("workload JSON") {
                Value::Array(events) => messages.extend(
                    events
                        .iter()
                        .map(|event| serde_json::to_vec(event).expect("event JSON")),
                ),
                event => messages.push(serde_json::to_vec(&event).expect("event JSON")),
            }
        }
        messages
    }

    /// Every session's expected row, in session order.
    pub fn expected_rows(&self) -> Vec<Session> {
        self.sessions
            .iter()
            .map(|session| session.expected.clone())
            .collect()
    }

    /// What the events endpoint must list for `session`, in its order: each distinct
    /// index of a listed type once, as the API's JSON, built here by hand from what
    /// was sent (an independent check of the service's serializer).
    pub fn expected_events(session: &PlannedSession) -> Vec<Value> {
        let mut by_index: BTreeMap<u64, &Value> = BTreeMap::new();
        for event in &session.events {
            by_index
                .entry(event["index"].as_u64().expect("index"))
                .or_insert(event);
        }
        let text = |event: &Value, field: &str| event[field].as_str().unwrap_or("").to_owned();
        let mut listed: Vec<(i64, u64, Value)> = by_index
            .into_iter()
            .filter_map(|(index, event)| {
                let timestamp = event["timestamp"].as_i64().expect("timestamp");
                let mut api = json!({
                    "sessionId": session.session_id.to_string(),
                    "messageId": index,
                    "timestamp": timestamp,
                });
                match event["type"].as_str()? {
                    "page" => {
                        let url = text(event, "url");
                        let (_, rest) = url.split_once("://").expect("an absolute URL");
                        let (host, path_and_query) =
                            rest.split_at(rest.find('/').unwrap_or(rest.len()));
                        let (path, query) = path_and_query
                            .split_once('?')
                            .unwrap_or((path_and_query, ""));
                        api["type"] = json!("LOCATION");
                        api["url"] = json!(url);
                        api["referrer"] = json!(text(event, "referrer"));
                        api["host"] = json!(host);
                        api["path"] = json!(if path.is_empty() { "/" } else { path });
                        api["query"] = json!(query);
                    }
                    "click" => {
                        api["type"] = json!("CLICK");
                        api["label"] = json!(text(event, "label"));
                        api["selector"] = json!(text(event, "selector"));
                    }
                    "input" => {
                        api["type"] = json!("INPUT");
                        api["label"] = json!(text(event, "label"));
                    }
                    "error" => {
                        api["type"] = json!("ERROR");
                        api["name"] = json!(text(event, "name"));
                        api["message"] = json!(text(event, "message"));
                    }
                    "custom" => {
                        api["type"] = json!("CUSTOM");
                        api["name"] = json!(text(event, "name"));
                        api["payload"] = json!(text(event, "payload"));
                    }
                    _ => return None,
                }
                Some((timestamp, index, api))
            })
            .collect();
        listed.sort_by_key(|(timestamp, index, _)| (*timestamp, *index));
        listed.into_iter().map(|(_, _, api)| api).collect()
    }

    /// Expected rows by user id (what the API must return for each user, in order).
    pub fn expected_by_user(&self) -> BTreeMap<String, Vec<Session>> {
        let mut by_user: BTreeMap<String, Vec<Session>> = BTreeMap::new();
        for session in &self.sessions {
            by_user
                .entry(session.expected.user_id.clone())
                .or_default()
                .push(session.expected.clone());
        }
        for sessions in by_user.values_mut() {
            sessions.sort_by_key(|s| (s.start_ts, s.session_id));
        }
        by_user
    }
}

fn plan_session(config: &WorkloadConfig, n: usize, rng: &mut StdRng) -> PlannedSession {
    let session_id = config.first_session_id + n as u64;
    let user = format!(
        "{}{}@example.com",
        config.user_prefix,
        rng.gen_range(0..config.users.max(1))
    );
    let start_ts = config.start_ts + n as i64 * 7_919 + rng.gen_range(0..5_000);
    let (agent, os, browser, device) = AGENTS[rng.gen_range(0..AGENTS.len())];
    let country = COUNTRIES[rng.gen_range(0..COUNTRIES.len())];
    let has_start = rng.gen_bool(0.97);
    let sends_agent_fields = rng.gen_bool(0.2);
    let user_at_start = rng.gen_bool(0.6);
    let switches_user = rng.gen_bool(0.1);
    let ends = rng.gen_bool(0.8);
    let total = rng
        .gen_range(2..=config.events_per_session.max(2) * 2 - 1)
        .max(2);
    let session_id_value = if n % 3 == 0 {
        json!(session_id)
    } else {
        json!(session_id.to_string())
    };
    let common = |index: usize, timestamp: i64, kind: &str| {
        json!({"projectId": config.project_id, "sessionId": session_id_value, "index": index,
               "timestamp": timestamp, "type": kind})
    };

    let mut events = Vec::with_capacity(total);
    let mut expected = Session {
        project_id: config.project_id,
        session_id,
        start_ts,
        ..Session::default()
    };
    let mut timestamp = start_ts;
    let mut min_ts = i64::MAX;
    let mut max_ts = i64::MIN;
    for index in 0..total {
        if index > 0 {
            timestamp += rng.gen_range(50..4_000);
        }
        let event = if index == 0 && has_start {
            let uuid = uuid::Builder::from_random_bytes(rng.gen())
                .into_uuid()
                .to_string();
            let mut event = common(index, timestamp, "session_start");
            event["userUuid"] = json!(uuid);
            event["userAgent"] = json!(agent);
            event["userCountry"] = json!(country);
            event["trackerVersion"] = json!("14.0.0");
            expected.user_uuid = uuid;
            expected.user_agent = agent.to_owned();
            expected.user_country = country.to_ascii_uppercase();
            if sends_agent_fields {
                // What a mobile SDK sends itself, unlike the agent string (which a
                // WebView may report as desktop).
                event["userOs"] = json!("Android");
                event["userBrowser"] = json!("Chrome Mobile WebView");
                event["userDevice"] = json!("Pixel 7");
                (
                    expected.user_os,
                    expected.user_browser,
                    expected.user_device,
                ) = (
                    "Android".into(),
                    "Chrome Mobile WebView".into(),
                    "Pixel 7".into(),
                );
            } else {
                (
                    expected.user_os,
                    expected.user_browser,
                    expected.user_device,
                ) = (os.into(), browser.into(), device.into());
            }
            if user_at_start {
                event["userId"] = json!(user);
                expected.user_id = user.clone();
            }
            event
        } else if index == total - 1 && ends {
            common(index, timestamp, "session_end")
        } else if switches_user && index == total / 2 {
            let switched = format!("{}switched-{n}@example.com", config.user_prefix);
            let mut event = common(index, timestamp, "user_id");
            event["userId"] = json!(switched);
            expected.user_id = switched;
            event
        } else if !user_at_start && index == 1 {
            let mut event = common(index, timestamp, "user_id");
            event["userId"] = json!(user);
            expected.user_id = user.clone();
            event
        } else {
            match rng.gen_range(0..100) {
                0..=29 => {
                    expected.pages_count += 1;
                    expected.events_count += 1;
                    let mut event = common(index, timestamp, "page");
                    event["url"] = json!(format!(
                        "https://shop.example.com/p/{}",
                        rng.gen_range(0..500)
                    ));
                    event["referrer"] = json!("https://www.example.org/");
                    event
                }
                30..=64 => {
                    expected.events_count += 1;
                    let mut event = common(index, timestamp, "click");
                    event["label"] = json!("Add to cart");
                    event["selector"] = json!("#product > div.actions > button.primary");
                    event
                }
                65..=84 => {
                    expected.events_count += 1;
                    let mut event = common(index, timestamp, "input");
                    event["label"] = json!("search");
                    event
                }
                85..=91 => {
                    expected.errors_count += 1;
                    let mut event = common(index, timestamp, "error");
                    event["name"] = json!("TypeError");
                    event["message"] = json!("Cannot read properties of undefined (reading 'id')");
                    event
                }
                92..=95 => {
                    // Custom events count nowhere; the events endpoint lists them.
                    let mut event = common(index, timestamp, "custom");
                    event["name"] = json!("checkout_step");
                    event["payload"] = json!(format!(
                        "{{\"step\":{},\"total\":{}}}",
                        rng.gen_range(0..1920),
                        rng.gen_range(0..1080)
                    ));
                    event
                }
                _ => {
                    let mut event = common(index, timestamp, "mouse_move");
                    event["x"] = json!(rng.gen_range(0..1920));
                    event["y"] = json!(rng.gen_range(0..1080));
                    event
                }
            }
        };
        min_ts = min_ts.min(timestamp);
        max_ts = max_ts.max(timestamp);
        events.push(event);
    }
    expected.start_ts = if has_start { start_ts } else { min_ts };
    expected.duration = (max_ts - expected.start_ts).max(0) as u64;
    PlannedSession {
        session_id,
        events,
        expected,
    }
}

/// Turns sessions into messages: duplicates, shuffling within sessions, interleaving
/// across sessions, and some batches.
fn deliver(
    sessions: &[PlannedSession],
    duplicate_rate: f64,
    rng: &mut StdRng,
) -> (Vec<PlannedMessage>, usize) {
    let mut queues: Vec<(String, Vec<&Value>)> = sessions
        .iter()
        .map(|session| {
            let mut queue: Vec<&Value> = session.events.iter().collect();
            for event in &session.events {
                if rng.gen_bool(duplicate_rate) {
                    queue.push(event);
                }
            }
            // Mostly in order, with local disorder: swap neighbours now and then.
            for i in 1..queue.len() {
                if rng.gen_bool(0.3) {
                    let j = rng.gen_range(i.saturating_sub(3)..=i);
                    queue.swap(i, j);
                }
            }
            queue.reverse(); // pop() takes from the front of the original order
            (session.session_id.to_string(), queue)
        })
        .collect();
    let mut messages = Vec::new();
    let mut events_sent = 0;
    let mut active: Vec<usize> = (0..queues.len()).collect();
    active.shuffle(rng);
    while !active.is_empty() {
        let slot = rng.gen_range(0..active.len().min(64));
        let (key, queue) = &mut queues[active[slot]];
        let batch_size = if rng.gen_bool(0.25) {
            rng.gen_range(2..=5)
        } else {
            1
        };
        let take = batch_size.min(queue.len());
        let batch: Vec<&Value> = (0..take).filter_map(|_| queue.pop()).collect();
        events_sent += batch.len();
        let payload = if batch_size == 1 {
            serde_json::to_vec(batch[0])
        } else {
            serde_json::to_vec(&batch)
        }
        .expect("events serialize");
        messages.push(PlannedMessage {
            key: key.clone(),
            payload,
        });
        if queue.is_empty() {
            active.swap_remove(slot);
        }
    }
    (messages, events_sent)
}

/// `payloads` (events and batches of events) taken apart and sent as hostile
/// producers would: every event shuffled by `seed`, in batches of 1 to 6 events that
/// mix sessions (and projects, if there are several), each keyed by the session of its
/// first event, except `keyless_share` of them sent without a key.
pub fn scramble(
    payloads: Vec<Value>,
    seed: u64,
    keyless_share: f64,
) -> Vec<(Option<String>, Vec<u8>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events: Vec<Value> = Vec::with_capacity(payloads.len());
    for payload in payloads {
        match payload {
            Value::Array(batch) => events.extend(batch),
            event => events.push(event),
        }
    }
    events.shuffle(&mut rng);
    let mut messages = Vec::new();
    let mut rest = events.as_slice();
    while !rest.is_empty() {
        let take = rng.gen_range(1..=6).min(rest.len());
        let (batch, tail) = rest.split_at(take);
        rest = tail;
        let key = (!rng.gen_bool(keyless_share)).then(|| {
            let session_id = &batch[0]["sessionId"];
            session_id
                .as_str()
                .map_or_else(|| session_id.to_string(), str::to_owned)
        });
        let payload = serde_json::to_vec(batch).expect("events serialize");
        messages.push((key, payload));
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessions_events::event::decode_message;
    use sessions_events::session::SessionState;
    use sessions_events::useragent::AgentParser;

    #[test]
    fn agents_have_the_families_uap_core_gives_them() {
        for (agent, os, browser, device) in AGENTS {
            let derived = AgentParser::shared().derive(agent);
            assert_eq!(
                (
                    derived.os.as_str(),
                    derived.browser.as_str(),
                    derived.device.as_str()
                ),
                (*os, *browser, *device)
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let config = WorkloadConfig {
            sessions: 20,
            ..WorkloadConfig::default()
        };
        let a = Workload::generate(&config);
        let b = Workload::generate(&config);
        assert_eq!(a.messages.len(), b.messages.len());
        assert!(a
            .messages
            .iter()
            .zip(&b.messages)
            .all(|(x, y)| x.payload == y.payload));
        assert!(a.events_sent > a.sessions.iter().map(|s| s.events.len()).sum::<usize>());
    }

    /// The pure aggregation, fed the delivered stream, gives the planned rows.
    #[test]
    fn folding_the_stream_gives_the_expected_rows() {
        let workload = Workload::generate(&WorkloadConfig {
            sessions: 300,
            ..WorkloadConfig::default()
        });
        let mut states: BTreeMap<u64, SessionState> = BTreeMap::new();
        for message in &workload.messages {
            let decoded = decode_message(&message.payload);
            assert!(decoded.rejections.is_empty(), "{:?}", decoded.rejections);
            for event in &decoded.events {
                match states.get_mut(&event.session_id) {
                    Some(state) => {
                        state.apply(event);
                    }
                    None => {
                        states.insert(event.session_id, SessionState::new(event));
                    }
                }
            }
        }
        for session in &workload.sessions {
            let row =
                states[&session.session_id].to_row(|agent| AgentParser::shared().derive(agent));
            assert_eq!(row.session, session.expected);
        }
    }
}
