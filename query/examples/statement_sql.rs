//! Prints a statement the service sends, with its values inlined as SQL literals, so
//! that the benchmark scripts send ClickHouse exactly what the service does:
//!
//! - `page [--unbounded] PROJECT_ID USER_ID LIMIT`: the whole-range SQL of a first
//!   page of a user's sessions (`sessions::whole_range_sql`, what the windows are
//!   tested against), bounded as the service sends it (`sessions::bounded_sql`: the
//!   one statement of a page of a user under `SCAN_MAX_ROWS` rows); `--unbounded`
//!   without the bound (the heavy user's "before"). `LIMIT` is the page size; like
//!   the service, the query fetches one row more.
//! - `user-stats PROJECT_ID USER_ID`: a user's statistics statement
//!   (`users::USER_STATS_SQL`), unbounded (what the fold replaces for a heavy user).
//!
//! Run: `cargo run --release -p sessions-query --example statement_sql -- page 1 user-1 50`.

use sessions_query::sessions::{bounded_sql, whole_range_sql, PageQuery, SCAN_MAX_ROWS};
use sessions_query::users::USER_STATS_SQL;

const USAGE: &str = "usage: statement_sql page [--unbounded] PROJECT_ID USER_ID LIMIT\n       \
                     statement_sql user-stats PROJECT_ID USER_ID";

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || anyhow::anyhow!(USAGE);
    let command = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    let unbounded = args.first().is_some_and(|arg| arg == "--unbounded");
    if unbounded {
        args.remove(0);
    }
    let mut args = args.into_iter();
    let project_id: u32 = args.next().ok_or_else(usage)?.parse()?;
    let user_id = args.next().ok_or_else(usage)?;
    let sql = match command.as_str() {
        "page" => {
            let limit: u32 = args.next().ok_or_else(usage)?.parse()?;
            let query = PageQuery {
                project_id,
                user_id: &user_id,
                start_date: None,
                end_date: None,
                after: None,
                fetch: limit + 1,
            };
            let sql = if unbounded {
                whole_range_sql(&query)
            } else {
                bounded_sql(&whole_range_sql(&query), SCAN_MAX_ROWS)
            };
            // Bound in the order of `fetch_whole_range`: project, user, limit (no
            // dates, no cursor).
            inline(
                &sql,
                &[
                    project_id.to_string(),
                    string_literal(&user_id),
                    (limit + 1).to_string(),
                ],
            )
        }
        "user-stats" => inline(
            USER_STATS_SQL,
            &[project_id.to_string(), string_literal(&user_id)],
        ),
        _ => return Err(usage()),
    };
    println!("{sql}");
    Ok(())
}

/// `sql` with its `?` placeholders replaced by `values`, in order.
fn inline(sql: &str, values: &[String]) -> String {
    let mut pieces = sql.split('?');
    let mut inlined = pieces.next().unwrap_or_default().to_owned();
    for (value, piece) in values.iter().zip(pieces) {
        inlined.push_str(value);
        inlined.push_str(piece);
    }
    inlined
}

/// A ClickHouse string literal: quotes and backslashes escaped.
fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}
