//! The one Rhai engine: hardened, with limits, compiled once per playbook part.
//!
//! Every Rhai part of a playbook (the trigger's `when`, `concurrency`, each step's `if`, `script`,
//! `foreach.items`, and the `${{ expr }}` templates in `with`, `vars`, `outputs`, prompts) is compiled
//! when the playbook loads, against a scope holding exactly the names a playbook may read: `alert`,
//! `incident`, `steps`, `vars`, `inputs` (and a `foreach` item's name). Evaluation runs with limits on
//! operations, call depth, expression depth and string/array/map sizes, a wall-clock deadline, and no
//! files, modules, network or `eval`; a runaway script fails its step with a clear error in bounded
//! time. Positions in [`ScriptError`] are within the Rhai source; `playbook::load` maps them to the
//! YAML file.
//!
//! For `cordon validate`, [`analysis`] checks compiled Rhai statically (the fields read, against
//! the data's [`shape::Shape`]; the types operators combine; the functions called), and
//! [`Scripts::type_error`] evaluates it on sample data for what only a run shows.

pub mod analysis;
mod engine;
pub mod shape;
mod template;

use std::time::Duration;

use serde_json::Value;

pub use engine::{NAMES, Scripts, describe};
pub use template::{CompiledValue, Template};

/// Limits every evaluation runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_depth: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Wall-clock time one evaluation may take.
    pub timeout: Duration,
}

impl Limits {
    /// A Rhai engine with these limits, strict variables and no `eval`: the sandbox every script
    /// (playbooks' and integrations') runs in. Callers add their printing, deadline and functions.
    pub fn sandbox(&self) -> rhai::Engine {
        let mut engine = rhai::Engine::new();
        engine.set_max_operations(self.max_operations);
        engine.set_max_call_levels(self.max_call_depth);
        engine.set_max_expr_depths(self.max_expr_depth, self.max_expr_depth);
        engine.set_max_string_size(self.max_string_size);
        engine.set_max_array_size(self.max_array_size);
        engine.set_max_map_size(self.max_map_size);
        engine.set_strict_variables(true);
        engine.disable_symbol("eval");
        engine
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 1_000_000,
            max_call_depth: 32,
            max_expr_depth: 64,
            max_string_size: 1024 * 1024,
            max_array_size: 100_000,
            max_map_size: 10_000,
            timeout: Duration::from_secs(2),
        }
    }
}

/// A compiled expression or script.
#[derive(Debug, Clone)]
pub struct Expr {
    pub(crate) ast: std::sync::Arc<rhai::AST>,
    /// The source, for messages.
    pub source: String,
    /// Which of [`NAMES`] the source mentions (bit `i` for `NAMES[i]`): only those are converted
    /// into the scope when it runs, the others stand there as `()`. A name can only be read by
    /// writing it (there is no `eval`), so a name the text does not hold is never read.
    pub(crate) reads: u8,
    /// Whether the source is straight-line: no loop and no function of its own, so its work is
    /// bounded by its length (and the sizes of what it maps over). The engine evaluates those on
    /// the task that needs them; the others on a blocking thread, where a long script stalls no
    /// other work.
    pub(crate) straight: bool,
}

impl Expr {
    pub fn is_straight(&self) -> bool {
        self.straight
    }
}

/// Whether `source` holds none of the words that can make a script run long (see
/// [`Expr::straight`]). A string that happens to hold one only sends the script to a thread.
pub(crate) fn is_straight(source: &str) -> bool {
    let bytes = source.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    ["for", "while", "loop", "do", "fn"].iter().all(|keyword| {
        let mut from = 0;
        while let Some(at) = source[from..].find(keyword) {
            let start = from + at;
            let end = start + keyword.len();
            if (start == 0 || !word(bytes[start - 1])) && (end == bytes.len() || !word(bytes[end]))
            {
                return false;
            }
            from = end;
        }
        true
    })
}

/// Which of [`NAMES`] `source` mentions as a whole word (see [`Expr::reads`]).
pub(crate) fn names_in(source: &str) -> u8 {
    let bytes = source.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut reads = 0;
    for (i, name) in NAMES.iter().enumerate() {
        let mut from = 0;
        while let Some(at) = source[from..].find(name) {
            let start = from + at;
            let end = start + name.len();
            let before = start == 0 || !word(bytes[start - 1]);
            let after = end == bytes.len() || !word(bytes[end]);
            if before && after {
                reads |= 1 << i;
                break;
            }
            from = end;
        }
    }
    reads
}

/// A script that would not compile or failed at run time. `line` and `column` are 1-based within
/// the script's own text (0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScriptError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

/// What an evaluation may read. Every field is a JSON value (`Null` when absent).
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub alert: Value,
    pub incident: Value,
    /// `steps.<id>`: `{ok, output, error, approved, decided_by, skipped}`.
    pub steps: Value,
    pub vars: Value,
    pub inputs: Value,
    /// A `foreach` item: its name and value.
    pub item: Option<(String, Value)>,
}
