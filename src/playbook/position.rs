//! Where each part of a playbook file is written.
//!
//! serde keeps no positions once a file has parsed, so the loader reads the text a second time as
//! YAML events (saphyr-parser) into a tree of [`Node`]s with their spans, and locates every finding
//! with it: a key, a value, or a line and column inside a scalar's text, which is how a Rhai error
//! inside a `script: |` block lands on the right line of the file.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span};

/// A place in the file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(marker: Marker) -> Pos {
        Pos {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// A YAML node and its span. An alias is replaced by a copy of the node it names, so positions
/// inside it point at the anchored text.
#[derive(Debug, Clone)]
pub struct Node {
    /// The first character: a quoted scalar's opening quote, a block scalar's first content
    /// character (on its first non-empty line), a block mapping's first key.
    start: Marker,
    end: Marker,
    pub kind: Kind,
}

/// What a node holds.
#[derive(Debug, Clone)]
pub enum Kind {
    Scalar {
        value: String,
        style: ScalarStyle,
    },
    Seq(Vec<Node>),
    /// Key and value nodes, in file order.
    Map(Vec<(Node, Node)>),
}

/// Reads the first document of `text` into a tree. An empty document is an empty plain scalar.
pub fn index(text: &str) -> Result<Node, ScanError> {
    let mut parser = Parser::new_from_str(text);
    let mut anchors = HashMap::new();
    loop {
        match next(&mut parser)? {
            (Event::StreamStart | Event::DocumentStart(_), _) => {}
            (Event::StreamEnd | Event::DocumentEnd, span) => return Ok(empty(span)),
            (event, span) => return node(&mut parser, event, span, &mut anchors),
        }
    }
}

fn next<'a>(
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
) -> Result<(Event<'a>, Span), ScanError> {
    parser.next_event().unwrap_or_else(|| {
        let end = Marker::new(0, 1, 0);
        Ok((Event::StreamEnd, Span::new(end, end)))
    })
}

fn empty(span: Span) -> Node {
    Node {
        start: span.start,
        end: span.end,
        kind: Kind::Scalar {
            value: String::new(),
            style: ScalarStyle::Plain,
        },
    }
}

fn node<'a>(
    parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
    event: Event<'a>,
    span: Span,
    anchors: &mut HashMap<usize, Node>,
) -> Result<Node, ScanError> {
    let (anchor, node) = match event {
        Event::Scalar(value, style, anchor, _) => (
            anchor,
            Node {
                start: span.start,
                end: span.end,
                kind: Kind::Scalar {
                    value: value.into_owned(),
                    style,
                },
            },
        ),
        Event::SequenceStart(anchor, _) => {
            let mut items = Vec::new();
            let end = loop {
                match next(parser)? {
                    (Event::SequenceEnd | Event::StreamEnd, end) => break end.end,
                    (event, span) => items.push(node(parser, event, span, anchors)?),
                }
            };
            (
                anchor,
                Node {
                    start: span.start,
                    end,
                    kind: Kind::Seq(items),
                },
            )
        }
        Event::MappingStart(anchor, _) => {
            let mut entries = Vec::new();
            let end = loop {
                match next(parser)? {
                    (Event::MappingEnd | Event::StreamEnd, end) => break end.end,
                    (event, span) => {
                        let key = node(parser, event, span, anchors)?;
                        let (event, span) = next(parser)?;
                        let value = node(parser, event, span, anchors)?;
                        entries.push((key, value));
                    }
                }
            };
            (
                anchor,
                Node {
                    start: span.start,
                    end,
                    kind: Kind::Map(entries),
                },
            )
        }
        Event::Alias(id) => {
            return Ok(anchors.get(&id).cloned().unwrap_or_else(|| empty(span)));
        }
        _ => return Ok(empty(span)),
    };
    if anchor != 0 {
        anchors.insert(anchor, node.clone());
    }
    Ok(node)
}

impl Node {
    /// Where the node starts.
    pub fn pos(&self) -> Pos {
        Pos::of(self.start)
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node `key` in a mapping (to point at the key rather than its value).
    pub fn key(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(k, _)| k)
    }

    fn entry(&self, key: &str) -> Option<&(Node, Node)> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)),
            _ => None,
        }
    }

    /// The `i`th item of a sequence.
    pub fn at(&self, i: usize) -> Option<&Node> {
        match &self.kind {
            Kind::Seq(items) => items.get(i),
            _ => None,
        }
    }

    /// A scalar's text.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Where `line`:`column` (1-based) of this scalar's text is in the file (`text`). Exact for
    /// literal blocks (`|`), plain and single-quoted scalars, and double-quoted ones with
    /// escapes; approximate for the whitespace of folded lines. A position past the end of the text
    /// lands just after its last character; a position of 0 (unknown) on its first one. Other
    /// nodes answer with their start.
    pub fn locate(&self, text: &str, line: usize, column: usize) -> Pos {
        let Kind::Scalar { value, style } = &self.kind else {
            return self.pos();
        };
        let (line, column) = (line.max(1), column.max(1));
        if *style == ScalarStyle::Literal {
            // Every line of a literal block is one line of its text, indented by the block's
            // indentation; the span starts at the first non-empty line.
            let leading_empty = value.chars().take_while(|c| *c == '\n').count();
            let first = self.start.line().saturating_sub(leading_empty);
            return Pos {
                line: first + line - 1,
                column: self.start.col() + column,
            };
        }
        let target = char_offset(value, line, column);
        self.align(text, value, *style, target)
    }

    /// Walks the source characters of a flow or folded scalar along its value: a character of the
    /// value is the next equal source character, an escape or a doubled quote, and source
    /// characters that folding removed (line breaks, indentation) are skipped.
    fn align(&self, text: &str, value: &str, style: ScalarStyle, target: usize) -> Pos {
        let len = self.end.index().saturating_sub(self.start.index()) + 1;
        let mut places = Vec::with_capacity(len);
        let (mut line, mut col) = (self.start.line(), self.start.col());
        let src: Vec<char> = text.chars().skip(self.start.index()).take(len).collect();
        for c in &src {
            places.push(Pos {
                line,
                column: col + 1,
            });
            if *c == '\n' {
                line += 1;
                col = 0;
            } else {
                col += 1;
            }
        }
        let end = Pos::of(self.end);
        let quoted = matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted);
        let mut p = usize::from(quoted);
        for (i, want) in value.chars().enumerate() {
            let at = loop {
                let Some(&c) = src.get(p) else {
                    return end;
                };
                if c == '\\' && style == ScalarStyle::DoubleQuoted {
                    if matches!(src.get(p + 1), Some('\n' | '\r')) {
                        // An escaped line break: no character, and the next line's indentation
                        // goes too.
                        p += 2;
                        while matches!(src.get(p), Some(' ' | '\t' | '\n' | '\r')) {
                            p += 1;
                        }
                        continue;
                    }
                    let width = match src.get(p + 1) {
                        Some('x') => 4,
                        Some('u') => 6,
                        Some('U') => 10,
                        _ => 2,
                    };
                    p += width;
                    break p - width;
                }
                if c == '\'' && style == ScalarStyle::SingleQuoted && src.get(p + 1) == Some(&'\'')
                {
                    p += 2;
                    break p - 2;
                }
                p += 1;
                if c == want {
                    break p - 1;
                }
            };
            if i == target {
                return places[at];
            }
        }
        places.get(p).copied().unwrap_or(end)
    }
}

/// The character offset of 1-based `line`:`column` in `text` (its length when past the end).
fn char_offset(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split('\n').enumerate() {
        let width = l.chars().count();
        if i + 1 == line {
            return offset + (column - 1).min(width);
        }
        offset += width + 1;
    }
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(node: &'a Node, path: &[&str]) -> &'a Node {
        path.iter().fold(node, |n, k| match k.parse::<usize>() {
            Ok(i) => n.at(i).unwrap(),
            Err(_) => n.get(k).unwrap(),
        })
    }

    const TEXT: &str = "\
id: x
steps:
  - id: a
    script: |

      let x = 1;
        x + y
  - with: { ip: \"${{ a }}\", n: 'it''s ${{ b }}' }
    if: >-
      steps.a
      && zz
    q: \"tab\\there ${{ c }}\"
    p: plain ${{ d }}
      next ${{ e }}
";

    #[test]
    fn keys_values_and_items_have_their_places() {
        let root = index(TEXT).unwrap();
        assert_eq!(root.key("steps").unwrap().pos(), Pos { line: 2, column: 1 });
        let step = find(&root, &["steps", "0"]);
        assert_eq!(step.pos(), Pos { line: 3, column: 5 });
        assert_eq!(step.get("id").unwrap().pos(), Pos { line: 3, column: 9 });
        assert_eq!(
            find(&root, &["steps", "1", "with", "ip"]).pos(),
            Pos {
                line: 8,
                column: 17
            }
        );
    }

    #[test]
    fn lines_of_a_literal_block_map_to_the_file() {
        let root = index(TEXT).unwrap();
        let script = find(&root, &["steps", "0", "script"]);
        // Line 1 is the empty line after `|`; line 3 is `  x + y`, indented 2 more.
        assert_eq!(
            script.locate(TEXT, 2, 5),
            Pos {
                line: 6,
                column: 11
            }
        );
        assert_eq!(
            script.locate(TEXT, 3, 7),
            Pos {
                line: 7,
                column: 13
            }
        );
    }

    #[test]
    fn offsets_in_flow_and_folded_scalars_map_to_the_file() {
        let root = index(TEXT).unwrap();
        let at = |path: &[&str], line, column| find(&root, path).locate(TEXT, line, column);
        // `"${{ a }}"`: the `a` is the 5th character of the value.
        assert_eq!(
            at(&["steps", "1", "with", "ip"], 1, 5),
            Pos {
                line: 8,
                column: 22
            }
        );
        // `'it''s ${{ b }}'`: the doubled quote is one character.
        assert_eq!(
            at(&["steps", "1", "with", "n"], 1, 10),
            Pos {
                line: 8,
                column: 43
            }
        );
        // A folded block: `zz` is on the second line of the file's block.
        assert_eq!(
            at(&["steps", "1", "if"], 1, 12),
            Pos {
                line: 11,
                column: 10
            }
        );
        // `\t` is one character of the value and two of the file.
        assert_eq!(
            at(&["steps", "1", "q"], 1, 14),
            Pos {
                line: 12,
                column: 23
            }
        );
        // A plain scalar over two lines: `e` on the second.
        assert_eq!(
            at(&["steps", "1", "p"], 1, 25),
            Pos {
                line: 14,
                column: 16
            }
        );
        // Past the end: just after the last character (on the closing quote).
        assert_eq!(
            at(&["steps", "1", "with", "ip"], 1, 40),
            Pos {
                line: 8,
                column: 26
            }
        );
    }

    #[test]
    fn aliases_point_at_the_anchored_text() {
        let text = "a: &x\n  k: v\nb: *x\n";
        let root = index(text).unwrap();
        assert_eq!(find(&root, &["b", "k"]).pos(), Pos { line: 2, column: 6 });
    }

    #[test]
    fn syntax_errors_are_scan_errors() {
        assert!(index("a: [1, 2\n").is_err());
        assert!(index("").unwrap().as_str() == Some(""));
    }
}
