//! Scans of Rhai text that Rhai's own parser does not give: where the expressions of a `${{ }}`
//! template are, and which `steps.<id>` a piece of code reads (for the checks of
//! [`super::validate`]).

use std::ops::Range;

/// The byte ranges of the expressions inside `${{ }}` in `text`, as
/// [`crate::script::Template::compile`] finds them.
pub(super) fn template_exprs(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("${{") {
        let inner = from + start + 3;
        let Some(len) = text[inner..].find("}}") else {
            break;
        };
        out.push(inner..inner + len);
        from = inner + len + 2;
    }
    out
}

/// Every `steps.<id>`, `steps?.<id>` and `steps["<id>"]` in Rhai `code` outside strings and
/// comments, with the byte offset of `steps`. A scan of the text, not of Rhai's AST: a local
/// variable named `steps` would be taken for the playbook's.
pub(super) fn step_reads(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    scan(code.as_bytes(), 0, false, &mut out);
    out
}

/// Scans code from `i`; inside a backtick string's `${ }` (`interpolation`), up to its `}`.
/// Returns where it stopped.
fn scan(b: &[u8], mut i: usize, interpolation: bool, out: &mut Vec<(usize, String)>) -> usize {
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let skip_space = |mut j: usize| {
        while b.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        j
    };
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != quote {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
                        i = scan(b, i + 2, true, out);
                    } else {
                        i += 1;
                    }
                }
                i += 1;
            }
            b'{' => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                if interpolation && depth == 0 {
                    return i + 1;
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let property = start > 0 && b[start - 1] == b'.';
                if &b[start..i] != b"steps" || property {
                    continue;
                }
                let mut j = skip_space(i);
                if b.get(j) == Some(&b'?') {
                    j += 1;
                }
                match b.get(j) {
                    Some(b'.') => {
                        let from = skip_space(j + 1);
                        let mut to = from;
                        while to < b.len() && is_ident(b[to]) {
                            to += 1;
                        }
                        if to > from {
                            out.push((start, String::from_utf8_lossy(&b[from..to]).into_owned()));
                        }
                    }
                    Some(b'[') => {
                        let from = skip_space(j + 1);
                        if let Some(&quote @ (b'"' | b'\'' | b'`')) = b.get(from)
                            && let Some(len) = b[from + 1..].iter().position(|&c| c == quote)
                        {
                            let id = &b[from + 1..from + 1 + len];
                            out.push((start, String::from_utf8_lossy(id).into_owned()));
                        }
                    }
                    _ => {}
                }
            }
            _ => i += 1,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_reads_skip_strings_comments_and_properties() {
        let reads = |code: &str| {
            step_reads(code)
                .into_iter()
                .map(|(at, id)| format!("{at}:{id}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            reads("steps.a + steps [ \"b-c\" ] + steps?.d + x.steps.e + mysteps.f"),
            ["0:a", "10:b-c", "28:d"]
        );
        assert!(reads("\"steps.a\" + 'x' /* steps.b */ // steps.c").is_empty());
        assert_eq!(reads("`n: ${steps.a.n} steps.b`"), ["6:a"]);
    }
}
