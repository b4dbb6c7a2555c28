//! Dependencies flow one way: the parts an alert passes through before any person or platform is
//! involved (the model in `model/` and `alert/`, the store, intake, playbooks and scripts) never reach up into chat,
//! tickets, the server's wiring (`app`) or the admin API (`api`). A newcomer can change a chat
//! platform without reading the store, and the store can be tested without a server.
//!
//! The check reads every `use`, path and `mod` line of those folders and files under `src/` and
//! fails, naming the file and line, on a reference to a module above them.

use std::path::{Path, PathBuf};

/// The lower layers, as paths under `src/` (a folder or one file).
const LOWER: &[&str] = &["model", "alert", "store", "intake", "playbook", "script"];

/// The middle: the engine and what it calls, which chat and tickets plug into from above.
const MIDDLE: &[&str] = &["engine", "actions", "outbox", "integrations", "audit"];

/// The edges: each gets what it needs passed in when it starts, and builds its own routes.
const EDGES: &[&str] = &["chat", "tickets"];

/// The modules the lower layers and the middle may not name.
const UPPER: &[&str] = &["chat", "tickets", "app", "api"];

/// The modules the edges may not name: the server's wiring and the admin API.
const WIRING: &[&str] = &["app", "api"];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// The places in `text` (line numbers, from 1) that name `crate::<upper>` for a forbidden module,
/// also inside a grouped `use crate::{...}`. A file's unit tests (from `#[cfg(test)] mod tests`
/// on) may start a whole server, so they are not read.
fn violations(text: &str) -> Vec<(usize, String)> {
    violations_of(text, UPPER)
}

fn violations_of(text: &str, forbidden: &[&str]) -> Vec<(usize, String)> {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    let mut out = Vec::new();
    let code: Vec<&str> = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect();
    for (i, line) in code.iter().enumerate() {
        for upper in forbidden {
            let direct = format!("crate::{upper}");
            let named = line.match_indices(&direct).any(|(at, _)| {
                let next = line[at + direct.len()..].chars().next();
                !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if named {
                out.push((i + 1, line.trim().to_owned()));
            }
        }
    }
    // `use crate::{a, b::c}` over one or more lines.
    let joined = code.join("\n");
    let mut rest = joined.as_str();
    while let Some(at) = rest.find("crate::{") {
        let line = joined[..joined.len() - rest.len() + at]
            .lines()
            .count()
            .max(1);
        let group = &rest[at + "crate::{".len()..];
        let end = group.find('}').unwrap_or(group.len());
        for name in group[..end].split(',') {
            let head = name.trim().split("::").next().unwrap_or("").trim();
            if forbidden.contains(&head) {
                out.push((line, format!("crate::{{{}}}", name.trim())));
            }
        }
        rest = &group[end..];
    }
    out
}

/// Every `.rs` file of `layers` (folders or files under `src/`), failing if one is gone.
fn files_of(layers: &[&str]) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for layer in layers {
        let folder = src.join(layer);
        let file = src.join(format!("{layer}.rs"));
        assert!(
            folder.is_dir() || file.is_file(),
            "src/{layer} is gone: update the layers in tests/layers.rs"
        );
        rust_files(&folder, &mut files);
        rust_files(&file, &mut files);
    }
    files
}

/// `file:line: what` for every place in `layers` that names one of `forbidden`.
fn found(layers: &[&str], forbidden: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = files_of(layers);
    assert!(files.len() >= layers.len(), "found only {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, what) in violations_of(&text, forbidden) {
            found.push(format!(
                "{}:{line}: {what}",
                file.strip_prefix(&src).unwrap().display()
            ));
        }
    }
    found
}

#[test]
fn the_lower_layers_never_import_chat_tickets_app_or_api() {
    assert!(files_of(LOWER).len() > 20);
    let found = found(LOWER, UPPER);
    assert!(
        found.is_empty(),
        "lower layers name modules above them:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_engine_and_what_it_calls_never_import_chat_tickets_app_or_api() {
    let found = found(MIDDLE, UPPER);
    assert!(
        found.is_empty(),
        "the engine, actions, outbox, integrations or audit name modules above them:\n{}",
        found.join("\n")
    );
}

#[test]
fn chat_and_tickets_never_reach_into_the_server_wiring_or_the_admin_api() {
    let found = found(EDGES, WIRING);
    assert!(
        found.is_empty(),
        "chat or tickets name the server's wiring or the admin API:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_direct_grouped_and_multi_line_imports() {
    assert_eq!(violations("use crate::app::AppState;")[0].0, 1);
    assert_eq!(violations("fn f() { crate::chat::click(); }").len(), 1);
    assert_eq!(
        violations("use crate::{\n    config::Config,\n    tickets::System,\n};").len(),
        1
    );
    // Not a forbidden module: a longer name, a comment, or a module of the same layer.
    assert!(violations("use crate::apis_of_vendors::X;").is_empty());
    assert!(violations("// see crate::chat for the cards").is_empty());
    assert!(violations("use crate::store::Store;").is_empty());
    // A file's unit tests are not read.
    assert!(
        violations("fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::app::Server;\n}")
            .is_empty()
    );
    assert_eq!(violations_of("use crate::app::Server;", WIRING).len(), 1);
    assert!(violations_of("use crate::chat::Card;", WIRING).is_empty());
}
