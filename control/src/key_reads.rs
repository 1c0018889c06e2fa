//! Reading the API keys that are not revoked, as the query service authorizes with
//! them: every acknowledged revocation seen, on a cluster too, and still answered
//! while ZooKeeper is down.
//!
//! Contract of [`active_keys`]:
//! - One server: the newest row per key hash, as written.
//! - Cluster: first a sequentially consistent read (`read_your_writes`: a replica
//!   behind the last quorum write refuses rather than answer without it). That read
//!   needs ZooKeeper; when it fails (ZooKeeper down, or every node refusing), the raw
//!   rows are read from each node of `CLICKHOUSE_URL` on its own and merged, newest
//!   row per hash. A revocation is acknowledged once `insert_quorum` replicas hold it,
//!   and `api_keys` is complete on every node, so any `nodes − quorum + 1` nodes
//!   include one that holds it: the merge is used only when at least that many nodes
//!   answered ([`nodes_needed`]), else the read fails (and the service's keys age
//!   until they are refused: fail closed). `CLICKHOUSE_URL` should list every node of
//!   the cluster for this to hold; with fewer, the merge holds for the nodes listed.
//!
//! So a revoked key is never authorized again once its revocation was acknowledged,
//! and the API keeps authorizing the other keys through a ZooKeeper outage (no
//! revocation can be acknowledged then: its write needs ZooKeeper too).

use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;
use sessions_shared::clickhouse::{Layout, Store, StoreError};

use crate::tenancy::ActiveKey;

/// The newest row per key hash, revoked or not.
const ACTIVE_KEYS_SQL: &str = "SELECT key_hash, key_org AS org_id FROM (\
     SELECT key_hash, argMax(org_id, version) AS key_org, argMax(revoked, version) AS is_revoked \
     FROM api_keys GROUP BY key_hash) WHERE is_revoked = 0";

/// Every row, as one node holds them (merged across nodes by [`merge_newest`]).
const KEY_ROWS_SQL: &str = "SELECT key_hash, org_id, revoked, version FROM api_keys";

/// One row of `api_keys`.
#[derive(Clone, Debug, Deserialize, Row)]
pub struct KeyRow {
    pub key_hash: String,
    pub org_id: u64,
    pub revoked: u8,
    pub version: u64,
}

/// The keys that are not revoked (see the module contract).
pub async fn active_keys(store: &Store) -> Result<Vec<ActiveKey>, StoreError> {
    let Layout::Cluster(cluster) = store.layout() else {
        return store
            .run(|client| client.query(ACTIVE_KEYS_SQL).fetch_all::<ActiveKey>())
            .await;
    };
    let consistent = store
        .run(|client| {
            store
                .read_your_writes(client.query(ACTIVE_KEYS_SQL))
                .fetch_all::<ActiveKey>()
        })
        .await;
    let error = match consistent {
        Ok(keys) => return Ok(keys),
        Err(error) => error,
    };
    let needed = nodes_needed(store.node_count(), cluster.insert_quorum);
    let mut answers = Vec::new();
    for node in 0..store.node_count() {
        if let Ok(rows) = store
            .run_on_node(node, |client| {
                client.query(KEY_ROWS_SQL).fetch_all::<KeyRow>()
            })
            .await
        {
            answers.push(rows);
        }
    }
    if answers.len() < needed {
        return Err(StoreError::Unavailable(format!(
            "API keys: the consistent read failed ({error}) and {} of {} nodes answered \
             the per-node read, fewer than the {needed} that must include a holder of \
             every acknowledged revocation",
            answers.len(),
            store.node_count()
        )));
    }
    tracing::debug!(%error, nodes = answers.len(), "API keys merged from each node's rows");
    Ok(merge_newest(answers.into_iter().flatten()))
}

/// How many of `nodes` must answer so that one of them holds any write that `quorum`
/// of them acknowledged: `nodes − quorum + 1`, at least 1.
pub fn nodes_needed(nodes: usize, quorum: u32) -> usize {
    (nodes + 1).saturating_sub(quorum as usize).max(1)
}

/// The keys whose newest row (highest version; at equal versions a revocation wins)
/// is not revoked, sorted by hash.
pub fn merge_newest(rows: impl IntoIterator<Item = KeyRow>) -> Vec<ActiveKey> {
    let mut newest: HashMap<String, KeyRow> = HashMap::new();
    for row in rows {
        match newest.get(&row.key_hash) {
            Some(kept) if (kept.version, kept.revoked) >= (row.version, row.revoked) => {}
            _ => {
                newest.insert(row.key_hash.clone(), row);
            }
        }
    }
    let mut active: Vec<ActiveKey> = newest
        .into_values()
        .filter(|row| row.revoked == 0)
        .map(|row| ActiveKey {
            key_hash: row.key_hash,
            org_id: row.org_id,
        })
        .collect();
    active.sort_by(|a, b| a.key_hash.cmp(&b.key_hash));
    active
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key_hash: &str, org_id: u64, revoked: u8, version: u64) -> KeyRow {
        KeyRow {
            key_hash: key_hash.into(),
            org_id,
            revoked,
            version,
        }
    }

    fn hashes(keys: &[ActiveKey]) -> Vec<(&str, u64)> {
        keys.iter()
            .map(|key| (key.key_hash.as_str(), key.org_id))
            .collect()
    }

    #[test]
    fn a_revocation_on_any_node_answering_wins() {
        // Node 1 lags behind the revocation of "a"; node 2 holds it.
        let node1 = [row("a", 1, 0, 10), row("b", 2, 0, 11)];
        let node2 = [row("a", 1, 0, 10), row("a", 1, 1, 20), row("b", 2, 0, 11)];
        let merged = merge_newest(node1.into_iter().chain(node2));
        assert_eq!(hashes(&merged), [("b", 2)]);
    }

    #[test]
    fn the_newest_row_decides_and_a_tie_is_a_revocation() {
        let rows = [
            row("a", 1, 1, 5),
            row("a", 1, 0, 6),
            row("b", 2, 0, 7),
            row("b", 2, 1, 7),
            row("c", 3, 0, 1),
        ];
        assert_eq!(hashes(&merge_newest(rows)), [("a", 1), ("c", 3)]);
        assert!(merge_newest([]).is_empty());
    }

    #[test]
    fn enough_nodes_include_a_holder_of_every_quorum_write() {
        // Four nodes, quorum 2: any three include one of the two holders.
        assert_eq!(nodes_needed(4, 2), 3);
        assert_eq!(nodes_needed(4, 1), 4);
        assert_eq!(nodes_needed(4, 4), 1);
        assert_eq!(nodes_needed(2, 2), 1);
        // A quorum larger than the nodes listed: one node, at least.
        assert_eq!(nodes_needed(1, 2), 1);
        assert_eq!(nodes_needed(0, 2), 1);
        // Exhaustively for small clusters: every set of `needed` nodes meets every
        // set of `quorum` nodes.
        for nodes in 1..=6usize {
            for quorum in 1..=nodes as u32 {
                let needed = nodes_needed(nodes, quorum);
                for answered in 0u32..(1 << nodes) {
                    for holders in 0u32..(1 << nodes) {
                        if answered.count_ones() as usize == needed
                            && holders.count_ones() == quorum
                        {
                            assert_ne!(answered & holders, 0, "{nodes} nodes, quorum {quorum}");
                        }
                    }
                }
                // And one fewer would not always do.
                assert!(needed == 1 || nodes - (needed - 1) >= quorum as usize);
            }
        }
    }
}
