//! Prints the whole-range SQL of a first page of a user's sessions
//! (`sessions::whole_range_sql`, what the windows are tested against), bounded as the
//! service sends it (`sessions::bounded_sql`: the one statement of a page of a user
//! under `SCAN_MAX_ROWS` rows), with the values inlined as SQL literals, so that
//! `scripts/bench-query.sh` can send the service's statement straight to ClickHouse.
//! `--unbounded` prints it without the bound (the heavy user's "before").
//!
//! Run: `cargo run --release -p sessions-query --example page_sql -- [--unbounded] PROJECT_ID USER_ID LIMIT`.
//! `LIMIT` is the page size; like the service, the query fetches one row more.

use sessions_query::sessions::{bounded_sql, whole_range_sql, PageQuery, SCAN_MAX_ROWS};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let unbounded = args.first().is_some_and(|arg| arg == "--unbounded");
    if unbounded {
        args.remove(0);
    }
    let mut args = args.into_iter();
    let usage = "usage: page_sql [--unbounded] PROJECT_ID USER_ID LIMIT";
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
    let sql = if unbounded {
        whole_range_sql(&query)
    } else {
        bounded_sql(&whole_range_sql(&query), SCAN_MAX_ROWS)
    };
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
