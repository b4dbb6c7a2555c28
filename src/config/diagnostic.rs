//! Errors in user-written files, located at `file:line:column`, with a hint.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a file the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    /// 1-based; 0 when the problem is the file as a whole.
    pub column: usize,
    pub message: String,
    /// What to do about it, when there is something useful to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &Path, line: usize, column: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// All the problems found in one go, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl Diagnostics {
    /// Turns one serde_yaml error into a diagnostic: the location moves from the message's
    /// ` at line L column C` suffix into `file:line:column`, and a hint is added where one helps.
    pub fn from_yaml(file: &Path, error: &serde_yaml::Error) -> Diagnostic {
        let (line, column) = error
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let text = error.to_string();
        let message = match text.rfind(" at line ") {
            Some(at) if line > 0 => text[..at].to_owned(),
            _ => text,
        };
        let hint = hint_for(&message);
        let mut d = Diagnostic::new(file, line, column, message);
        d.hint = hint;
        d
    }
}

/// A hint for the common serde messages: the closest expected name for a typo, what a type needs.
fn hint_for(message: &str) -> Option<String> {
    if let Some((found, expected)) = unknown_name(message) {
        if let Some(best) = expected
            .iter()
            .map(|e| (strsim::jaro_winkler(&found, e), e))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, e)| e)
        {
            return Some(format!("did you mean `{best}`?"));
        }
        if !expected.is_empty() {
            let list = expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Some(format!("expected one of {list}"));
        }
    }
    if message.contains("environment variable") {
        return Some(
            "export the variable, or write `${VAR:-value}` to use a value for local use only"
                .to_owned(),
        );
    }
    if message.contains("invalid type") {
        return Some(
            "check the value's type against the documented example in config.example.yaml"
                .to_owned(),
        );
    }
    None
}

/// From "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), the found name and
/// the expected ones.
fn unknown_name(message: &str) -> Option<(String, Vec<String>)> {
    let start = ["unknown field `", "unknown variant `", "unknown source `"]
        .iter()
        .find_map(|p| message.find(p).map(|i| i + p.len()))?;
    let rest = &message[start..];
    let end = rest.find('`')?;
    let found = rest[..end].to_owned();
    let expected = rest[end + 1..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((found, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_name() {
        let hint =
            hint_for("server: unknown field `lisen`, expected one of `listen`, `admin_token`");
        assert_eq!(hint.as_deref(), Some("did you mean `listen`?"));
        let hint = hint_for("unknown variant `zzz`, expected `human` or `json`");
        assert_eq!(hint.as_deref(), Some("expected one of `human`, `json`"));
    }
}
