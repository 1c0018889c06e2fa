//! The repository stands alone: every relative link in its Markdown files resolves
//! to a file or folder inside it, and nothing it runs or documents reaches outside it
//! (no `../shared`, the folder the project's contracts came from, which users do not
//! have). And every crate's integration tests keep the contract of their one binary:
//! each takes its turn first.

use sessions_testkit::serial;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The repository's root (this crate is one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Folders that are not the repository's own text: build output, local state, VCS.
const SKIPPED: &[&str] = &["target", ".local", ".git", "corpus", "artifacts"];

/// Every file under `dir` whose name ends with one of `extensions`.
fn files(dir: &Path, extensions: &[&str], found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable folder") {
        let path = entry.expect("folder entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !SKIPPED.contains(&name) {
                files(&path, extensions, found);
            }
        } else if extensions.iter().any(|extension| name.ends_with(extension)) {
            found.push(path);
        }
    }
}

/// The targets of inline Markdown links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        targets.push(target);
        rest = &rest[end..];
    }
    targets
}

/// `path` with `.` and `..` resolved lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal
}

#[test]
fn every_relative_link_in_the_documentation_resolves_inside_the_repository() {
    let _turn = serial::shared();
    let root = root();
    let mut documents = Vec::new();
    files(&root, &[".md"], &mut documents);
    assert!(
        documents.len() >= 3,
        "found the Markdown files: {documents:?}"
    );
    let mut dangling = Vec::new();
    for document in &documents {
        let text = fs::read_to_string(document).expect("readable document");
        for target in link_targets(&text) {
            let external = ["http://", "https://", "mailto:", "#"]
                .iter()
                .any(|prefix| target.starts_with(prefix));
            if external || target.is_empty() {
                continue;
            }
            let file = target.split('#').next().unwrap_or(target);
            let resolved = normalize(&document.parent().expect("folder").join(file));
            if !resolved.starts_with(&root) || !resolved.exists() {
                dangling.push(format!(
                    "{}: {target}",
                    document.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(dangling.is_empty(), "dangling links: {dangling:#?}");
}

#[test]
fn nothing_in_the_repository_reaches_for_a_folder_beside_it() {
    let _turn = serial::shared();
    let root = root();
    let mut sources = Vec::new();
    files(
        &root,
        &[
            ".md", ".sh", ".rs", ".py", ".toml", ".yml", ".yaml", ".xml", ".in",
        ],
        &mut sources,
    );
    sources.extend(
        [".ci/run", "Dockerfile"]
            .iter()
            .map(|name| root.join(name))
            .filter(|path| path.exists()),
    );
    // `../shared` from a file of the repository's root is outside it; from a crate's
    // folder it is the `shared` crate, inside.
    let needle = "../shared";
    let offenders: Vec<String> = sources
        .iter()
        .filter(|path| {
            let text = fs::read_to_string(path).unwrap_or_default();
            let outside = normalize(&path.parent().expect("folder").join(needle));
            text.contains(needle) && !outside.starts_with(&root)
        })
        .map(|path| path.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "files naming {needle} outside the repository: {offenders:?}"
    );
}

/// Every integration test of every crate (`*/tests/it/*.rs`: one binary per crate,
/// whose tests run at the same time) takes its turn (`sessions_testkit::serial`) as
/// its first statement, so that none overlaps a test that must run alone
/// (docs/testing.md, "One binary per crate").
#[test]
fn every_integration_test_takes_its_turn_first() {
    let _turn = serial::shared();
    let root = root();
    let mut sources = Vec::new();
    for entry in fs::read_dir(&root).expect("readable root") {
        let tests = entry.expect("folder entry").path().join("tests/it");
        if tests.is_dir() {
            files(&tests, &[".rs"], &mut sources);
        }
    }
    let mut tests = 0;
    let mut without_turn = Vec::new();
    for source in &sources {
        let text = fs::read_to_string(source).expect("readable source");
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let attribute = line.trim();
            if attribute != "#[test]" && !attribute.starts_with("#[tokio::test") {
                continue;
            }
            tests += 1;
            // The body opens at the end of the signature; comments may precede its
            // first statement.
            let first_statement = lines[index..]
                .iter()
                .position(|line| line.trim_end().ends_with('{'))
                .and_then(|opening| {
                    lines[index + opening + 1..]
                        .iter()
                        .map(|line| line.trim())
                        .find(|line| !line.is_empty() && !line.starts_with("//"))
                });
            let takes_turn = first_statement.is_some_and(|statement| {
                statement == "let _turn = serial::shared();"
                    || statement == "let _turn = serial::exclusive();"
            });
            if !takes_turn {
                without_turn.push(format!(
                    "{}:{}",
                    source.strip_prefix(&root).unwrap().display(),
                    index + 1
                ));
            }
        }
    }
    assert!(
        tests >= 60,
        "found the integration tests: {tests} in {sources:?}"
    );
    assert!(
        without_turn.is_empty(),
        "tests whose first statement takes no turn: {without_turn:#?}"
    );
}
