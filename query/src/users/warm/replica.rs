//! Where a heavy user's fold reads: one node and the table there that stores
//! `sessions` (itself on one server, its shard-local table on a cluster). Every read of
//! a fold (the parts listing, the count and the rows of parts) goes to that one node,
//! with no failover, so that the parts it lists are the parts it reads.
//!
//! On a cluster the node is the first of `CLICKHOUSE_URL` whose shard-local table holds
//! a row of the user (sharded by project and user, all of them are on one shard); its
//! listing's generation names the node, so a fold read elsewhere starts over.

use serde::Deserialize;
use sessions_shared::clickhouse::{bounded_by, Layout, Query, Row, Store, StoreError};

use crate::users::fold::{FoldRow, ListedPart, Listing, StatsFold};

/// The active parts of a table (bound: database and table, twice), each with the
/// table's generation.
const PARTS_SQL: &str = "SELECT name, min_block_number, max_block_number, data_version, \
     ifNull((SELECT toString(metadata_modification_time) FROM system.tables \
      WHERE database = ? AND name = ?), '') AS generation \
     FROM system.parts WHERE database = ? AND table = ? AND active";

/// Whether a node's table stores rows of the user (its primary index answers).
const HOLDS_USER_SQL: &str = "SELECT count() FROM (SELECT 1 FROM {table} \
     WHERE project_id = ? AND user_id = ? LIMIT 1)";

const FOLD_COLUMNS: &str = "session_id, version, deleted, start_ts, duration";

#[derive(Row, Deserialize)]
struct PartRow {
    name: String,
    min_block: i64,
    max_block: i64,
    data_version: u64,
    generation: String,
}

/// The user's rows in some parts of `table` (the `_part` condition picks parts before
/// reading).
fn rows_sql(columns: &str, table: &str, parts: usize) -> String {
    let names = vec!["?"; parts].join(", ");
    format!(
        "SELECT {columns} FROM {table} \
         WHERE project_id = ? AND user_id = ? AND _part IN ({names})"
    )
}

/// Whether an error of a fold's node makes the statement answer instead: on a cluster,
/// a node that refuses or lost ZooKeeper (another may answer). A timeout is not (its
/// time is spent, as in `Store::run`), and one server has no other node.
pub fn falls_over(store: &Store, error: &StoreError) -> bool {
    !matches!(store.layout(), Layout::SingleNode)
        && error.is_node_failure()
        && !matches!(error, StoreError::Timeout(_))
}

/// One node of the store and its table storing `sessions`.
pub struct Replica<'a> {
    store: &'a Store,
    node: usize,
    table: String,
}

impl<'a> Replica<'a> {
    /// Node `node` of `CLICKHOUSE_URL`.
    pub fn on_node(store: &'a Store, node: usize) -> Replica<'a> {
        Replica {
            store,
            node,
            table: store.layout().storage_table("sessions"),
        }
    }

    /// The node a fold of the user reads: the one server, or the first node of
    /// `CLICKHOUSE_URL` whose shard-local table holds the user's rows (none: `None`).
    /// Nodes that fail over are passed by.
    pub async fn holding(
        store: &'a Store,
        project_id: u32,
        user_id: &str,
    ) -> Result<Option<Replica<'a>>, StoreError> {
        if matches!(store.layout(), Layout::SingleNode) {
            return Ok(Some(Replica::on_node(store, 0)));
        }
        let sql = HOLDS_USER_SQL.replace("{table}", &store.layout().storage_table("sessions"));
        for node in 0..store.node_count() {
            let holds = store
                .run_on_node(node, |client| {
                    client
                        .query(&sql)
                        .bind(project_id)
                        .bind(user_id)
                        .fetch_one::<u64>()
                })
                .await;
            match holds {
                Ok(1) => return Ok(Some(Replica::on_node(store, node))),
                Ok(_) => {}
                Err(error) if falls_over(store, &error) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// Its index in `CLICKHOUSE_URL`.
    pub fn node(&self) -> usize {
        self.node
    }

    /// The table's active parts here. The generation names the node too.
    pub async fn list_parts(&self) -> Result<Listing, StoreError> {
        let database = self.store.database();
        let table = self.table.as_str();
        let rows: Vec<PartRow> = self
            .store
            .run_on_node(self.node, |client| {
                client
                    .query(PARTS_SQL)
                    .bind(database)
                    .bind(table)
                    .bind(database)
                    .bind(table)
                    .fetch_all()
            })
            .await?;
        Ok(Listing {
            generation: rows
                .first()
                .map(|row| format!("{}/{}", self.node, row.generation))
                .unwrap_or_default(),
            parts: rows
                .into_iter()
                .map(|row| ListedPart {
                    name: row.name,
                    min_block: row.min_block,
                    max_block: row.max_block,
                    data_version: row.data_version,
                })
                .collect(),
        })
    }

    /// How many of the user's rows `parts` hold (~25 ms for a million on 18.16).
    pub async fn count_rows(
        &self,
        project_id: u32,
        user_id: &str,
        parts: &[ListedPart],
    ) -> Result<u64, StoreError> {
        let query = self.rows_query("count()", project_id, user_id, parts);
        bounded_by(self.store.timeout(), query.fetch_one::<u64>()).await
    }

    /// Folds the user's rows of `parts`: how many, and false if it stopped because the
    /// fold outgrew `budget`.
    pub async fn read_rows(
        &self,
        fold: &mut StatsFold,
        project_id: u32,
        user_id: &str,
        parts: &[ListedPart],
        budget: usize,
    ) -> Result<(u64, bool), StoreError> {
        // Built once: rows go into the fold as they come.
        let query = self.rows_query(FOLD_COLUMNS, project_id, user_id, parts);
        bounded_by(self.store.timeout(), async {
            let mut cursor = query.fetch::<FoldRow>()?;
            let mut rows = 0;
            while let Some(row) = cursor.next().await? {
                fold.fold(&row);
                rows += 1;
                if fold.sessions() > budget {
                    return Ok((rows, false));
                }
            }
            Ok((rows, true))
        })
        .await
    }

    /// [`rows_sql`] with its values bound, on this node.
    fn rows_query(
        &self,
        columns: &str,
        project_id: u32,
        user_id: &str,
        parts: &[ListedPart],
    ) -> Query {
        let query = self
            .store
            .node_client(self.node)
            .query(&rows_sql(columns, &self.table, parts.len()))
            .bind(project_id)
            .bind(user_id);
        parts
            .iter()
            .fold(query, |query, part| query.bind(part.name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rows_statement_names_one_placeholder_per_part() {
        let sql = rows_sql(FOLD_COLUMNS, "sessions_local", 3);
        assert!(sql.ends_with("_part IN (?, ?, ?)"), "{sql}");
        assert!(sql.contains("FROM sessions_local WHERE"), "{sql}");
        assert_eq!(sql.matches('?').count(), 5, "project, user and three parts");
    }

    #[test]
    fn the_probe_names_the_table_once() {
        let sql = HOLDS_USER_SQL.replace("{table}", "sessions_local");
        assert!(sql.contains("FROM sessions_local WHERE"), "{sql}");
        assert_eq!(sql.matches('?').count(), 2, "project and user");
    }
}
