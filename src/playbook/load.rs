//! Loading playbooks: read each file into the [`Playbook`] model, have it checked and compiled
//! ([`super::validate`]), then check across files, with every problem at `file:line:column`.
//!
//! A file is read twice. serde parses it into the model; a YAML syntax error or a wrong structure
//! (an unknown key, a wrong type) stops the file there, located by serde_yaml. saphyr-parser reads
//! it into a position index ([`super::position`]) that locates everything found afterwards, since
//! serde keeps no positions. Then every check of [`super::validate`] runs and every problem is
//! collected.
//!
//! Durations are checked on the position index before serde runs: serde_yaml puts an error raised
//! while converting a value at the start of the enclosing mapping, not at the value.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::Compiled;
use super::model::Playbook;
use super::position::{self, Pos};
use super::validate::{CallSite, Checker, check_call, check_durations};
use crate::actions::Catalog;
use crate::config::{Diagnostic, Diagnostics};
use crate::script::Scripts;

/// Loads, checks and compiles the playbook in `path`. `groups` are the approver groups of the
/// config. Every problem found is returned, each located in the file.
pub fn load_file(
    path: &Path,
    scripts: &Scripts,
    catalog: &dyn Catalog,
    groups: Option<&[String]>,
) -> Result<Compiled, Vec<Diagnostic>> {
    load_one(path, scripts, catalog, groups)
        .map(|loaded| loaded.compiled)
        .map_err(|failed| failed.diagnostics)
}

/// Loads every playbook under `paths`: a file, or a folder's `*.yaml` and `*.yml` files (sorted,
/// not recursive). Returns the playbooks that loaded and the problems of the others, including
/// those found across files: a playbook id used twice (at the second file's `id`), and a `call`
/// of a playbook that is not there or with inputs it does not take.
pub fn load_paths(
    paths: &[PathBuf],
    scripts: &Scripts,
    catalog: &dyn Catalog,
    groups: Option<&[String]>,
) -> (Vec<Compiled>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|entry| entry.ok().map(|e| e.path()))
                        .filter(|p| {
                            p.is_file()
                                && matches!(
                                    p.extension().and_then(|e| e.to_str()),
                                    Some("yaml" | "yml")
                                )
                        })
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => diagnostics.push(Diagnostic::new(
                    path,
                    0,
                    0,
                    format!("cannot read the playbook folder: {e}"),
                )),
            }
        } else {
            files.push(path.clone());
        }
    }

    let mut loaded: Vec<Loaded> = Vec::new();
    // Ids of files that failed, when known, so a call of them is not also reported as unknown.
    let mut failed_ids = BTreeSet::new();
    for file in &files {
        match load_one(file, scripts, catalog, groups) {
            Ok(one) => {
                if let Some(first) = loaded.iter().find(|l| l.compiled.id() == one.compiled.id()) {
                    diagnostics.push(
                        Diagnostic::new(
                            file,
                            one.id_at.line,
                            one.id_at.column,
                            format!("playbook id `{}` is already used", one.compiled.id()),
                        )
                        .with_hint(format!(
                            "{} has it; playbook ids are unique",
                            first.compiled.file.display()
                        )),
                    );
                } else {
                    loaded.push(one);
                }
            }
            Err(failed) => {
                diagnostics.extend(failed.diagnostics);
                failed_ids.extend(failed.id);
            }
        }
    }

    let playbooks: Vec<&Compiled> = loaded.iter().map(|l| &l.compiled).collect();
    let mut broken = BTreeSet::new();
    for one in &loaded {
        let before = diagnostics.len();
        for call in &one.calls {
            check_call(
                call,
                &one.compiled.file,
                &playbooks,
                &failed_ids,
                &mut diagnostics,
            );
        }
        if diagnostics.len() > before {
            broken.insert(one.compiled.id().to_owned());
        }
    }
    let compiled = loaded
        .into_iter()
        .map(|l| l.compiled)
        .filter(|c| !broken.contains(c.id()))
        .collect();
    (compiled, diagnostics)
}

/// Checks, compiles and returns the playbook in `text`; `file` names it in diagnostics and in
/// [`Compiled::file`].
pub fn parse(
    text: &str,
    file: &Path,
    scripts: &Scripts,
    catalog: &dyn Catalog,
    groups: Option<&[String]>,
) -> Result<Compiled, Vec<Diagnostic>> {
    parse_one(text, file, scripts, catalog, groups)
        .map(|loaded| loaded.compiled)
        .map_err(|failed| failed.diagnostics)
}

/// A playbook that loaded, with what the cross-file checks need.
struct Loaded {
    compiled: Compiled,
    id_at: Pos,
    calls: Vec<CallSite>,
}

/// A file that did not load: its problems, and its id when it could be read.
struct Failed {
    diagnostics: Vec<Diagnostic>,
    id: Option<String>,
}

impl From<Vec<Diagnostic>> for Failed {
    fn from(diagnostics: Vec<Diagnostic>) -> Failed {
        Failed {
            diagnostics,
            id: None,
        }
    }
}

fn load_one(
    path: &Path,
    scripts: &Scripts,
    catalog: &dyn Catalog,
    groups: Option<&[String]>,
) -> Result<Loaded, Failed> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::new(
            path,
            0,
            0,
            format!("cannot read the playbook: {e}"),
        )]
    })?;
    parse_one(&text, path, scripts, catalog, groups)
}

fn parse_one(
    text: &str,
    file: &Path,
    scripts: &Scripts,
    catalog: &dyn Catalog,
    groups: Option<&[String]>,
) -> Result<Loaded, Failed> {
    let index = position::index(text);
    let id = index
        .as_ref()
        .ok()
        .and_then(|root| root.get("id")?.as_str().map(str::to_owned));
    let fail = |mut diagnostics: Vec<Diagnostic>| {
        diagnostics.sort_by_key(|d| (d.line, d.column));
        Failed {
            diagnostics,
            id: id.clone(),
        }
    };

    let mut diagnostics = Vec::new();
    if let Ok(root) = &index {
        check_durations(root.get("steps"), file, &mut diagnostics);
    }
    let spec: Playbook = match serde_yaml::from_str(text) {
        Ok(spec) => spec,
        Err(e) => {
            let found = match &index {
                // serde_yaml gives no place for its alias limit; the index's refusal has one.
                Err(refused) if Diagnostics::from_yaml(file, &e).line == 0 => {
                    index_diagnostic(file, refused)
                }
                _ => yaml_diagnostic(file, &e),
            };
            // A bad duration is already reported above, at its value.
            if diagnostics.is_empty() || !found.message.contains("duration") {
                diagnostics.push(found);
            }
            return Err(fail(diagnostics));
        }
    };
    let root = match index {
        Ok(root) => root,
        // serde_yaml (libyaml) accepted what a YAML 1.2 parser refuses: report it rather than guess.
        Err(e) => {
            diagnostics.push(index_diagnostic(file, &e));
            return Err(fail(diagnostics));
        }
    };
    if !diagnostics.is_empty() {
        return Err(fail(diagnostics));
    }

    match Checker::new(text, file, scripts, catalog, groups).check(spec, &root) {
        Ok((compiled, calls)) => Ok(Loaded {
            compiled,
            id_at: root.get("id").unwrap_or(&root).pos(),
            calls,
        }),
        Err(diagnostics) => Err(fail(diagnostics)),
    }
}

/// What the YAML 1.2 reader of the position index refused, at its place.
fn index_diagnostic(file: &Path, error: &saphyr_parser::ScanError) -> Diagnostic {
    let mark = error.marker();
    Diagnostic::new(
        file,
        mark.line(),
        mark.col() + 1,
        format!("YAML: {}", error.info()),
    )
}

/// serde_yaml's error, located by it, with a hint fit for a playbook (the shared one points at the
/// config's example).
fn yaml_diagnostic(file: &Path, error: &serde_yaml::Error) -> Diagnostic {
    let mut found = Diagnostics::from_yaml(file, error);
    // libyaml repeats the place inside some messages ("... at line 7 column 33, while parsing").
    let place = format!(" at line {} column {}", found.line, found.column);
    found.message = found.message.replace(&place, "");
    if found.message.contains("invalid type") {
        found.hint = Some("check the value's type against the playbook format".into());
    }
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::actions::{SpecCatalog, builtin_specs};
    use crate::playbook::StepKind;
    use crate::script::CompiledValue;

    fn data(dir: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/playbooks")
            .join(dir)
    }

    fn groups() -> Vec<String> {
        vec!["soc-l2".to_owned(), "soc-l1".to_owned()]
    }

    fn catalog() -> SpecCatalog {
        SpecCatalog::new(builtin_specs())
    }

    /// The problems of playbook `text`, as `line:column message`.
    pub(crate) fn problems(text: &str) -> Vec<String> {
        match parse(
            text,
            Path::new("p.yaml"),
            &Scripts::default(),
            &catalog(),
            Some(&groups()),
        ) {
            Ok(_) => Vec::new(),
            Err(found) => found
                .iter()
                .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
                .collect(),
        }
    }

    pub(crate) fn compiles(text: &str) -> Compiled {
        parse(
            text,
            Path::new("p.yaml"),
            &Scripts::default(),
            &catalog(),
            Some(&groups()),
        )
        .unwrap_or_else(|e| panic!("{}", Diagnostics(e)))
    }

    #[test]
    fn each_broken_file_fails_once_at_the_place_its_comment_names() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(data("broken"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 15, "{files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{}: no `# expect:` line", file.display()));
            let (place, fragment) = expect.split_once(' ').unwrap();
            let (line, column) = place.split_once(':').unwrap();
            let hint = text.lines().nth(1).and_then(|l| l.strip_prefix("# hint: "));

            let found = load_file(&file, &Scripts::default(), &catalog(), Some(&groups()))
                .err()
                .unwrap_or_else(|| panic!("{} loaded", file.display()));
            let shown = Diagnostics(found.clone()).to_string();
            assert_eq!(found.len(), 1, "{shown}");
            let d = &found[0];
            assert_eq!(d.file, file);
            assert_eq!(
                (d.line.to_string(), d.column.to_string()),
                (line.to_owned(), column.to_owned()),
                "{shown}"
            );
            assert!(d.message.contains(fragment), "{shown}");
            if let Some(hint) = hint {
                assert_eq!(d.hint.as_deref(), Some(hint), "{shown}");
            }
        }
    }

    #[test]
    fn the_good_playbooks_compile_with_every_part() {
        let (compiled, problems) = load_paths(
            &[data("good")],
            &Scripts::default(),
            &catalog(),
            Some(&groups()),
        );
        assert!(problems.is_empty(), "{}", Diagnostics(problems));
        let ids: Vec<&str> = compiled.iter().map(Compiled::id).collect();
        assert_eq!(ids, ["notify", "guardduty-triage"]);

        let triage = &compiled[1];
        assert!(triage.listens_to("aws.securityhub"));
        assert!(triage.when.is_some() && triage.concurrency.is_some());
        assert!(matches!(triage.vars["region"], CompiledValue::Template(_)));
        let steps: Vec<&str> = triage.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            steps,
            ["assess", "note", "approve", "mark", "per_entity", "fan_out"]
        );
        assert!(matches!(triage.steps[0].kind, StepKind::Script(_)));
        let StepKind::Approval { spec, .. } = &triage.steps[2].kind else {
            panic!("approve is not an approval");
        };
        assert_eq!(spec.timeout.0, std::time::Duration::from_secs(1800));
        let mark = &triage.steps[3];
        assert!(mark.condition.is_some());
        assert_eq!(mark.timeout, Some(std::time::Duration::from_secs(10)));
        assert_eq!(mark.retry.as_ref().unwrap().backoff.0.as_secs(), 2);
        let StepKind::Foreach {
            name,
            concurrency,
            steps,
            ..
        } = &triage.steps[4].kind
        else {
            panic!("per_entity is not a foreach");
        };
        assert_eq!((name.as_str(), *concurrency, steps.len()), ("entity", 1, 1));
        let StepKind::Parallel(branches) = &triage.steps[5].kind else {
            panic!("fan_out is not parallel");
        };
        assert!(
            matches!(&branches[1][0].kind, StepKind::Call { playbook, .. } if playbook == "notify")
        );
        assert_eq!(triage.steps[5].on_error, super::super::OnError::Continue);
    }

    #[test]
    fn structure_errors_stop_the_file_with_serde_s_location() {
        let found = problems("id: x\nname: y\non:\n  source: { a: 1 }\nsteps: []\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0]
                .starts_with("4:11 on.source: invalid type: map, expected a source name or a list"),
            "{found:?}"
        );
        let found = problems("id: x\nname: y\nsteps:\n  - id: a\n    on_error: ignore\n");
        assert!(
            found[0].starts_with("5:15 steps[0].on_error: unknown variant `ignore`"),
            "{found:?}"
        );
    }

    #[test]
    fn load_paths_checks_ids_and_calls_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "a.yaml",
            "id: a\nname: A\ninputs:\n  who: { required: true }\nsteps:\n  - id: s\n    script: inputs.who\n",
        );
        write(
            "b.yml",
            "id: a\nname: Also A\nsteps:\n  - id: s\n    script: 1\n",
        );
        write(
            "c.yaml",
            "id: c\nname: C\nsteps:\n  - id: one\n    call: { playbook: a, inputs: { whom: x } }\n  - id: two\n    call: { playbook: b }\n",
        );
        write("notes.txt", "not a playbook");
        let (compiled, found) = load_paths(
            &[dir.path().to_owned()],
            &Scripts::default(),
            &catalog(),
            Some(&groups()),
        );
        let found: Vec<String> = found
            .iter()
            .map(|d| {
                format!(
                    "{} {}:{} {}",
                    d.file.file_name().unwrap().to_string_lossy(),
                    d.line,
                    d.column,
                    d.message
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                "b.yml 1:5 playbook id `a` is already used",
                "c.yaml 5:36 playbook `a` takes no input `whom`",
                "c.yaml 5:26 playbook `a` needs input `who`",
                "c.yaml 7:23 no playbook `b` to call",
            ]
        );
        let ids: Vec<&str> = compiled.iter().map(Compiled::id).collect();
        assert_eq!(ids, ["a"]);
    }

    /// A hostile file is one located problem, not a crash or the machine's memory: nesting past
    /// what any playbook needs, and aliases that would expand a few lines to millions of values.
    #[test]
    fn deep_nesting_and_alias_bombs_are_located_problems() {
        let mut deep = String::from("id: deep\nvars:\n");
        for i in 0..200 {
            deep.push_str(&format!("{}k{i}:\n", " ".repeat(2 + i)));
        }
        let mut bomb = String::from("id: bomb\nvars:\n  l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            bomb.push_str(&format!("  l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"));
        }
        assert_eq!(problems(&deep), ["130:130 recursion limit exceeded"]);
        assert_eq!(
            problems(&bomb),
            ["7:47 YAML: the document holds more than 100000 values once aliases are expanded"]
        );
    }
}
