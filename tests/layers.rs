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

/// The modules the lower layers and the middle may not name.
const UPPER: &[&str] = &["chat", "tickets", "app", "api"];

/// The middle: the engine and what it calls, which chat and tickets plug into from above.
const MIDDLE: &[&str] = &[
    "engine",
    "actions",
    "outbox",
    "integrations",
    "audit",
    "trust",
];

/// The edges: each gets what it needs passed in when it starts, and builds its own routes.
const EDGES: &[&str] = &["chat", "tickets"];

/// The modules the edges may not name: the server's wiring and the admin API.
const WIRING: &[&str] = &["app", "api"];

/// What some lower layers may not name besides: the model is the bottom (it names only `alert`
/// and `config`), and the store keeps what the model defines, so it names neither the engine, the
/// outbox worker, actions and playbooks, nor the audit log's old home (`crate::audit`, now a
/// re-export of `model::audit` for the code above).
const ALSO: &[(&str, &[&str])] = &[
    (
        "model",
        &[
            "engine",
            "store",
            "intake",
            "playbook",
            "script",
            "actions",
            "outbox",
            "audit",
            "integrations",
            "telemetry",
        ],
    ),
    (
        "store",
        &[
            "engine", "outbox", "actions", "playbook", "script", "intake", "audit",
        ],
    ),
];

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

/// The places in `text` (line numbers, from 1) that name `crate::<upper>` for a module of `UPPER`,
/// also inside a grouped `use crate::{...}`.
fn violations(text: &str) -> Vec<(usize, String)> {
    naming(text, UPPER)
}

/// The places in `text` that name `crate::<module>` for one of `forbidden`. A file's unit tests
/// (from `#[cfg(test)] mod tests` on) may start a whole server, so they are not read.
fn naming(text: &str, forbidden: &[&str]) -> Vec<(usize, String)> {
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

/// Every place in `files` (under `src`) naming one of `forbidden`, as `path:line: what`.
fn found_in(src: &Path, files: &[PathBuf], forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, what) in naming(&text, forbidden) {
            found.push(format!(
                "{}:{line}: {what}",
                file.strip_prefix(src).unwrap().display()
            ));
        }
    }
    found
}

#[test]
fn the_lower_layers_never_import_chat_tickets_app_or_api() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for layer in LOWER {
        let folder = src.join(layer);
        let file = src.join(format!("{layer}.rs"));
        assert!(
            folder.is_dir() || file.is_file(),
            "src/{layer} is gone: update LOWER in tests/layers.rs"
        );
        rust_files(&folder, &mut files);
        rust_files(&file, &mut files);
    }
    assert!(files.len() > 20, "found only {files:?}");
    let found = found_in(&src, &files, UPPER);
    assert!(
        found.is_empty(),
        "lower layers name modules above them:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_model_names_only_alerts_and_config_and_the_store_only_the_model_below_the_engine() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for (layer, forbidden) in ALSO {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(files.len() > 2, "src/{layer}: found only {files:?}");
        found.extend(found_in(&src, &files, forbidden));
    }
    assert!(
        found.is_empty(),
        "the model or the store name modules they must not:\n{}",
        found.join("\n")
    );
}

/// Every `.rs` file of `layers` (folders or files under `src/`), failing if one is gone.
fn files_of(src: &Path, layers: &[&str]) -> Vec<PathBuf> {
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

#[test]
fn the_engine_and_what_it_calls_never_import_chat_tickets_app_or_api() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = found_in(&src, &files_of(&src, MIDDLE), UPPER);
    assert!(
        found.is_empty(),
        "the engine, actions, outbox, integrations or audit name modules above them:\n{}",
        found.join("\n")
    );
}

#[test]
fn chat_and_tickets_never_reach_into_the_server_wiring_or_the_admin_api() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = found_in(&src, &files_of(&src, EDGES), WIRING);
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
    assert_eq!(naming("use crate::app::Server;", WIRING).len(), 1);
    assert!(naming("use crate::chat::Card;", WIRING).is_empty());
}
