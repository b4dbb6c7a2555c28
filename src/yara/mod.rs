//! YARA rules on evidence: the rule files of `yara.paths`, compiled at load and at every reload
//! (a set with an error is refused whole, each error at `file:line:column`), and the scan behind
//! the `yara.scan` action (`crate::actions::builtin`).
//!
//! The engine is boreal, a YARA implementation in Rust, in process: no libyara, no external
//! binary. docs/dependencies.md has the measurements it was chosen on (against yara-x).
//!
//! Each rule file is its own namespace (its path relative to the folder it was found in, or its
//! file name), so two files may both name a rule `suspicious` without clashing. `include` is not
//! allowed: a rule set is exactly the files configured, which is what `cordon validate` checks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Diagnostic, Diagnostics, HumanDuration};

pub mod s3;

/// `yara:` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YaraConfig {
    /// Rule files, or folders of them (`*.yar`, `*.yara`, in subfolders too), compiled at start
    /// and at every reload. Empty (the default): `yara.scan` is refused, saying so.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// The largest artifact `yara.scan` takes, in bytes (default 32 MiB): a larger text is refused,
    /// a download stops there and is refused, naming this key.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Wall-clock limit of one scan (default `10s`); a scan that takes longer fails its step.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// The AWS credentials (a name under `integrations.credentials`) `yara.scan` reads S3 objects
    /// with (`s3: s3://bucket/key`): their keys or the default chain, the role they assume for the
    /// alert's account, their `endpoints`. Unset: an `s3` input is refused.
    #[serde(default)]
    pub s3_credentials: Option<String>,
}

impl Default for YaraConfig {
    fn default() -> Self {
        YaraConfig {
            paths: Vec::new(),
            max_bytes: default_max_bytes(),
            timeout: default_timeout(),
            s3_credentials: None,
        }
    }
}

fn default_max_bytes() -> usize {
    32 * 1024 * 1024
}

fn default_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

/// A compiled rule set.
pub struct Rules {
    scanner: boreal::Scanner,
    /// The files it was compiled from.
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").field("files", &self.files).finish()
    }
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    /// The rule's name.
    pub rule: String,
    /// Its namespace: the file it is in.
    pub namespace: String,
    pub tags: Vec<String>,
    /// The identifiers of the strings that matched (`$a`), without their bytes: the evidence says
    /// which rule fired, the artifact itself says the rest.
    pub strings: Vec<String>,
}

/// What a scan found.
#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    /// The SHA-256 of the bytes scanned (lowercase hex).
    pub sha256: String,
    pub size: usize,
    pub matches: Vec<Match>,
}

/// The rule files in `paths`, in a stable order: files as given, folders walked for `*.yar` and
/// `*.yara`. Each with the namespace its rules get.
fn rule_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, Diagnostic> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found).map_err(|e| {
                Diagnostic::new(path, 0, 0, format!("cannot read the rule folder: {e}"))
            })?;
            found.sort();
            for file in found {
                let namespace = file
                    .strip_prefix(path)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                out.push((file, namespace));
            }
        } else {
            let namespace = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((path.clone(), namespace));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yar" || e == "yara") {
            out.push(path);
        }
    }
    Ok(())
}

/// Line and column (1-based, in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Compiles the rules of `config.paths`; every error of every file, at `file:line:column`.
/// `Ok(None)` when no paths are configured.
pub fn compile(config: &YaraConfig) -> Result<Option<Rules>, Diagnostics> {
    if config.paths.is_empty() {
        return Ok(None);
    }
    let files = rule_files(&config.paths).map_err(|d| Diagnostics(vec![d]))?;
    let mut compiler = boreal::Compiler::new();
    compiler.set_params(boreal::compiler::CompilerParams::default().disable_includes(true));
    let mut problems = Vec::new();
    for (file, namespace) in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                problems.push(Diagnostic::new(
                    file,
                    0,
                    0,
                    format!("cannot read the rule file: {e}"),
                ));
                continue;
            }
        };
        if let Err(error) = compiler.add_rules_str_in_namespace(&text, namespace) {
            let diagnostic = error.to_diagnostic();
            let (line, column) = diagnostic
                .labels
                .first()
                .map_or((0, 0), |label| position(&text, label.range.start));
            problems.push(
                Diagnostic::new(file, line, column, diagnostic.message.clone())
                    .with_hint("YARA rule syntax as YARA 4 reads it; `include` is not allowed (list the file in yara.paths)"),
            );
        }
    }
    if files.is_empty() {
        problems.push(Diagnostic::new(
            &config.paths[0],
            0,
            0,
            "yara.paths names no rule file (*.yar, *.yara)",
        ));
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    let mut scanner = compiler.finalize();
    scanner.set_scan_params(
        boreal::scanner::ScanParams::default().timeout_duration(Some(config.timeout.0)),
    );
    Ok(Some(Rules {
        scanner,
        files: files.into_iter().map(|(f, _)| f).collect(),
    }))
}

impl Rules {
    /// Scans `bytes` (on the calling thread: callers run it on a blocking thread).
    pub fn scan(&self, bytes: &[u8]) -> Result<Scan, String> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let result = self
            .scanner
            .scan_mem(bytes)
            .map_err(|(error, _)| format!("the YARA scan failed: {error}"))?;
        let matches = result
            .rules
            .iter()
            .filter(|r| r.matched)
            .map(|r| Match {
                rule: r.name.to_owned(),
                namespace: r.namespace.to_owned(),
                tags: r
                    .tags
                    .iter()
                    .map(|t| self.scanner.get_string_symbol(*t).to_owned())
                    .collect(),
                strings: r
                    .matches
                    .iter()
                    .filter(|s| !s.matches.is_empty())
                    .map(|s| format!("${}", s.name))
                    .collect(),
            })
            .collect();
        Ok(Scan {
            sha256,
            size: bytes.len(),
            matches,
        })
    }
}

/// The rules in force and the limits they run with; a reload replaces the rules.
pub struct Yara {
    current: RwLock<Option<Arc<Rules>>>,
    /// `yara.max_bytes`.
    pub max_bytes: usize,
    /// Reads S3 objects, when `yara.s3_credentials` is set.
    pub s3: Option<s3::S3Reader>,
}

impl Yara {
    /// Compiles the configured rules.
    pub fn load(config: &YaraConfig) -> Result<Yara, Diagnostics> {
        Ok(Yara {
            current: RwLock::new(compile(config)?.map(Arc::new)),
            max_bytes: config.max_bytes,
            s3: None,
        })
    }

    /// Gives `yara.scan` S3 objects to read.
    pub fn with_s3(mut self, s3: Option<s3::S3Reader>) -> Yara {
        self.s3 = s3;
        self
    }

    /// Puts a newly compiled set in place; scans under way finish on the old one.
    pub fn replace(&self, rules: Option<Rules>) {
        if let Ok(mut current) = self.current.write() {
            *current = rules.map(Arc::new);
        }
    }

    /// The rules in force, if any are configured.
    pub fn rules(&self) -> Option<Arc<Rules>> {
        self.current
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Scans `bytes` with the rules in force, on a blocking thread.
    pub async fn scan(&self, bytes: Vec<u8>) -> Result<Scan, String> {
        let rules = self.rules().ok_or(
            "no YARA rules are configured (config: yara.paths); `cordon validate` checks them",
        )?;
        if bytes.len() > self.max_bytes {
            return Err(too_large(bytes.len(), self.max_bytes));
        }
        tokio::task::spawn_blocking(move || rules.scan(&bytes))
            .await
            .map_err(|_| "the YARA scan stopped unexpectedly".to_owned())?
    }
}

/// The refusal of a download that passed the cap.
pub fn too_large_download(max: usize) -> String {
    format!(
        "the artifact is larger than the {max} bytes YARA scans take (config: yara.max_bytes); nothing was scanned"
    )
}

/// The refusal of an artifact over the cap.
pub fn too_large(size: usize, max: usize) -> String {
    format!(
        "the artifact is {size} bytes, larger than the {max} bytes YARA scans take (config: yara.max_bytes); nothing was scanned"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "rule a {\n  condition: é and\n}";
        assert_eq!(position(text, 0), (1, 1));
        let offset = text.find("and").expect("and");
        assert_eq!(position(text, offset), (2, 16));
    }
}
