//! What one deletion batch is: which users fit together, and the conditions and the
//! pattern that name them in SQL (pure; `deletion` runs them).
//!
//! Contract: a batch is bounded ([`MAX_BATCH_USERS`] users, [`MAX_CONDITION_BYTES`] of
//! condition by [`condition_cost`]), so no statement outgrows ClickHouse's
//! `max_query_size` (256 KiB); values never enter the SQL as text: user ids only as
//! `unhex('…')` (the dead letters' pattern too, by its caller), projects as numbers.

use std::collections::{BTreeMap, BTreeSet};

/// Most users one batch deletes.
pub const MAX_BATCH_USERS: usize = 1_000;
/// Most bytes the users and projects of one batch take in a statement's condition
/// ([`condition_cost`]): the longest statement (the `sessions` mutation, or the dead
/// letters' read) is then this plus under 1 KiB, well within ClickHouse's default
/// `max_query_size` of 256 KiB.
pub const MAX_CONDITION_BYTES: usize = 100_000;
/// What a project adds to a batch's conditions, beyond its users ([`condition_cost`]).
const PROJECT_CONDITION_BYTES: usize = 240;

/// One user to delete, in its project.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeletedUser {
    pub project_id: u32,
    pub user_id: String,
}

/// The bytes `user_id` adds to the longest statement of a batch: its id's hex in the
/// rows' condition (`unhex('…'), `), or the hex of its alternative in the dead
/// letters' pattern (its JSON form, regex-escaped, and a `|`), whichever is longer.
pub fn condition_cost(user_id: &str) -> usize {
    let quoted = serde_json::to_string(user_id).expect("a string serializes");
    2 * (regex_escape(&quoted).len() + 1).max(user_id.len() + 6)
}

/// Whether `users` fit one batch: at most [`MAX_BATCH_USERS`], and their
/// [`condition_cost`] plus [`PROJECT_CONDITION_BYTES`] per project at most
/// [`MAX_CONDITION_BYTES`]. A single user always fits (a user id is at most 256 bytes).
pub fn fits_one_batch<'a>(users: impl IntoIterator<Item = (u32, &'a str)>) -> bool {
    let mut count = 0;
    let mut bytes = 0;
    let mut projects = BTreeSet::new();
    for (project_id, user_id) in users {
        count += 1;
        bytes += condition_cost(user_id);
        if projects.insert(project_id) {
            bytes += PROJECT_CONDITION_BYTES;
        }
    }
    count <= MAX_BATCH_USERS && bytes <= MAX_CONDITION_BYTES
}

/// `(project_id = 1 AND user_id IN (unhex('…'), …)) OR (project_id = 2 AND …)`: the
/// rows of `users`, grouped by project, ids only as hex.
pub fn users_condition(users: &[&DeletedUser]) -> String {
    grouped_condition(users, |project_id| format!("project_id = {project_id}"))
}

/// `(<of project 1> AND user_id IN (…)) OR …`, the users grouped by project.
fn grouped_condition(users: &[&DeletedUser], of_project: impl Fn(u32) -> String) -> String {
    let mut by_project: BTreeMap<u32, BTreeSet<&str>> = BTreeMap::new();
    for user in users {
        by_project
            .entry(user.project_id)
            .or_default()
            .insert(&user.user_id);
    }
    let clauses: Vec<String> = by_project
        .into_iter()
        .map(|(project_id, ids)| {
            let ids: Vec<String> = ids
                .into_iter()
                .map(|id| format!("unhex('{}')", hex::encode(id)))
                .collect();
            format!(
                "({} AND user_id IN ({}))",
                of_project(project_id),
                ids.join(", ")
            )
        })
        .collect();
    clauses.join(" OR ")
}

/// `(project_id IN (0, 1) AND user_id IN (unhex('…'), …)) OR …`: the
/// `dead_letter_subjects` rows naming one of `users` in their project, or in no valid
/// project (project 0: a payload without one is every project's concern).
pub fn subjects_condition(users: &[&DeletedUser]) -> String {
    grouped_condition(users, |project_id| {
        format!("project_id IN (0, {project_id})")
    })
}

/// The pattern of a dead letter that names one of `users`: `"userId"`, a colon, and
/// one of their ids as JSON writes it, every regular-expression character escaped.
pub fn users_pattern(users: &[&DeletedUser]) -> String {
    let ids: BTreeSet<String> = users
        .iter()
        .map(|user| {
            let quoted = serde_json::to_string(&user.user_id).expect("a string serializes");
            regex_escape(&quoted)
        })
        .collect();
    format!(
        r#""userId"\s*:\s*(?:{})"#,
        ids.into_iter().collect::<Vec<_>>().join("|")
    )
}

/// `text` with every character a regular expression gives a meaning to escaped.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_is_matched_literally_in_its_json_form() {
        assert_eq!(regex_escape(r#""a.b*c""#), r#""a\.b\*c""#);
        assert_eq!(regex_escape(r#""x\"y""#), r#""x\\"y""#);
    }

    fn user(project_id: u32, user_id: &str) -> DeletedUser {
        DeletedUser {
            project_id,
            user_id: user_id.into(),
        }
    }

    #[test]
    fn a_batch_condition_names_users_by_project_in_hex_only() {
        let users = [
            user(2, "b'); DROP TABLE sessions; --"),
            user(1, "alice"),
            user(2, "a"),
            user(1, "alice"),
        ];
        let refs: Vec<&DeletedUser> = users.iter().collect();
        let condition = users_condition(&refs);
        assert_eq!(
            condition,
            format!(
                "(project_id = 1 AND user_id IN (unhex('616c696365'))) OR \
                 (project_id = 2 AND user_id IN (unhex('61'), unhex('{}')))",
                hex::encode("b'); DROP TABLE sessions; --")
            )
        );
        // Nothing of an id reaches the SQL but hex digits.
        assert!(!condition.contains("DROP"));
        assert_eq!(
            users_condition(&refs[1..2]),
            "(project_id = 1 AND user_id IN (unhex('616c696365')))"
        );
    }

    #[test]
    fn the_subjects_condition_also_names_dead_letters_of_no_valid_project() {
        let users = [user(2, "b"), user(1, "a")];
        let refs: Vec<&DeletedUser> = users.iter().collect();
        assert_eq!(
            subjects_condition(&refs),
            "(project_id IN (0, 1) AND user_id IN (unhex('61'))) OR \
             (project_id IN (0, 2) AND user_id IN (unhex('62')))"
        );
    }

    #[test]
    fn the_dead_letters_pattern_matches_any_user_of_the_batch_literally() {
        let users = [user(1, "a.b"), user(2, "x\"y"), user(1, "a.b")];
        let refs: Vec<&DeletedUser> = users.iter().collect();
        assert_eq!(users_pattern(&refs), r#""userId"\s*:\s*(?:"a\.b"|"x\\"y")"#);
    }

    #[test]
    fn a_batch_fits_by_users_and_by_condition_bytes() {
        let short: Vec<(u32, String)> =
            (0..MAX_BATCH_USERS).map(|n| (1, format!("u{n}"))).collect();

        assert!(fits_one_batch(pairs(&short)));
        let mut one_more = short.clone();
        one_more.push((1, "more".into()));
        assert!(
            !fits_one_batch(pairs(&one_more)),
            "more than MAX_BATCH_USERS"
        );
        // The longest ids, escaped the most (control characters): a batch of one fits.
        let worst = "\u{1}".repeat(256);
        assert!(condition_cost(&worst) > 256 * 4);
        assert!(fits_one_batch([(1, worst.as_str())]));
        let many_worst =
            vec![(1, worst.as_str()); MAX_CONDITION_BYTES / condition_cost(&worst) + 1];
        assert!(!fits_one_batch(many_worst), "past MAX_CONDITION_BYTES");
        // What a batch that fits writes stays under the bound (plus projects' parts).
        let users: Vec<DeletedUser> = short.iter().map(|(p, u)| user(*p, u)).collect();
        let refs: Vec<&DeletedUser> = users.iter().collect();
        assert!(users_condition(&refs).len() <= MAX_CONDITION_BYTES);
        assert!(subjects_condition(&refs).len() <= MAX_CONDITION_BYTES);
        assert!(hex::encode(users_pattern(&refs)).len() <= MAX_CONDITION_BYTES);
    }

    fn pairs(users: &[(u32, String)]) -> Vec<(u32, &str)> {
        users.iter().map(|(p, u)| (*p, u.as_str())).collect()
    }
}
