//! `userOs` / `userBrowser` / `userDevice` derived from a `userAgent` string.
//!
//! Uses the `uaparser` crate with uap-core's `regexes.yaml` (Apache-2.0, shipped in the
//! `uaparser` 0.6.4 package and kept in `events/data/`), so it works offline. Family
//! names are uap-core's (`Mac OS X`, `Chrome`). Desktops have device "" (docs/events.md,
//! as in the seed's example): uap-core names a desktop's device `Other` (Windows, Linux,
//! ChromeOS) or `Mac`, and both are reported as "".
//!
//! Parsing one agent runs hundreds of regexes (tens of microseconds), so results are
//! cached per distinct agent string; real traffic has few distinct agents. Only the
//! first [`MAX_PARSED_AGENT_BYTES`] of an agent are parsed and cached (real agents are
//! shorter), so a producer sending huge agents costs bounded time and cache memory.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use uaparser::{Parser, UserAgentParser};

use crate::session::DerivedAgent;

static REGEXES: &[u8] = include_bytes!("../data/uap-core-regexes.yaml");

/// Distinct agents cached before the cache is cleared (bounds memory).
const CACHE_CAPACITY: usize = 10_000;

/// Bytes of an agent that are parsed (and cached): ~10 MiB of cache at most.
pub const MAX_PARSED_AGENT_BYTES: usize = 1024;

/// The first [`MAX_PARSED_AGENT_BYTES`] of `user_agent`, cut on a character boundary.
fn parsed_prefix(user_agent: &str) -> &str {
    if user_agent.len() <= MAX_PARSED_AGENT_BYTES {
        return user_agent;
    }
    let mut end = MAX_PARSED_AGENT_BYTES;
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    &user_agent[..end]
}

/// A thread-safe, caching user-agent parser.
pub struct AgentParser {
    parser: UserAgentParser,
    cache: Mutex<HashMap<String, DerivedAgent>>,
}

impl AgentParser {
    /// The process-wide parser, built on first use (~1 s: it compiles the regexes).
    pub fn shared() -> &'static AgentParser {
        static PARSER: OnceLock<AgentParser> = OnceLock::new();
        PARSER.get_or_init(|| AgentParser {
            parser: UserAgentParser::builder()
                .with_unicode_support(false)
                .build_from_bytes(REGEXES)
                .expect("the bundled uap-core regexes compile"),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn derive(&self, user_agent: &str) -> DerivedAgent {
        let user_agent = parsed_prefix(user_agent);
        if let Some(hit) = self.cache.lock().expect("cache lock").get(user_agent) {
            return hit.clone();
        }
        let client = self.parser.parse(user_agent);
        let device = match client.device.family.as_ref() {
            "Other" | "Mac" => String::new(),
            family => family.to_owned(),
        };
        let derived = DerivedAgent {
            os: client.os.family.into_owned(),
            browser: client.user_agent.family.into_owned(),
            device,
        };
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(user_agent.to_owned(), derived.clone());
        derived
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_uap_core_family_names() {
        let parser = AgentParser::shared();
        let mac_chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.77 Safari/537.36";
        assert_eq!(
            parser.derive(mac_chrome),
            DerivedAgent {
                os: "Mac OS X".into(),
                browser: "Chrome".into(),
                device: String::new()
            }
        );
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 14_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.1.1 Mobile/15E148 Safari/604.1";
        let derived = parser.derive(iphone);
        assert_eq!(
            (
                derived.os.as_str(),
                derived.browser.as_str(),
                derived.device.as_str()
            ),
            ("iOS", "Mobile Safari", "iPhone")
        );
        let windows_firefox =
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:89.0) Gecko/20100101 Firefox/89.0";
        assert_eq!(parser.derive(windows_firefox).browser, "Firefox");
        assert_eq!(parser.derive(windows_firefox).os, "Windows");
        // Cached answers equal fresh ones.
        assert_eq!(parser.derive(mac_chrome).os, "Mac OS X");
    }

    #[test]
    fn only_a_bounded_prefix_of_a_huge_agent_is_parsed() {
        let parser = AgentParser::shared();
        let windows_firefox =
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:89.0) Gecko/20100101 Firefox/89.0";
        let huge = format!("{windows_firefox} {}", "é".repeat(40_000));
        let started = std::time::Instant::now();
        assert_eq!(parser.derive(&huge).browser, "Firefox");
        assert!(parsed_prefix(&huge).len() <= MAX_PARSED_AGENT_BYTES);
        assert!(parsed_prefix(&huge).len() > MAX_PARSED_AGENT_BYTES - 2);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
