//! Prints the whole-range SQL of a first page of a user's sessions
//! (`sessions::whole_range_sql`: what the service ran before it read pages through
//! windows, and what the windows are tested against), with the values inlined as SQL
//! literals, so that `scripts/bench-query.sh` can send it straight to ClickHouse.
//!
//! Run: `cargo run --release -p sessions-query --example page_sql -- PROJECT_ID USER_ID LIMIT`.
//! `LIMIT` is the page size; like the service, the query fetches one row more.

use sessions_query::sessions::{whole_range_sql, PageQuery};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: page_sql PROJECT_ID USER_ID LIMIT";
    let project_id: u32 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let user_id = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let limit: u32 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let query = PageQuery {
        project_id,
        user_id: &user_id,
        start_date: None,
        end_date: None,
        after: None,
        fetch: limit + 1,
    };
    // Bound in the order of `fetch_whole_range`: project, user, limit (no dates, no cursor).
    let values = [
        project_id.to_string(),
        string_literal(&user_id),
        (limit + 1).to_string(),
    ];
    let sql = whole_range_sql(&query);
    let mut pieces = sql.split('?');
    let mut inlined = pieces.next().unwrap_or_default().to_owned();
    for (value, piece) in values.iter().zip(pieces) {
        inlined.push_str(value);
        inlined.push_str(piece);
    }
    println!("{inlined}");
    Ok(())
}

/// A ClickHouse string literal: quotes and backslashes escaped.
fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}
