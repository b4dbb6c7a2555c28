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

/// How deep collections may nest. Playbooks and manifests need a handful of levels; the limit keeps
/// a hostile file from exhausting the stack of the recursive reader (serde_yaml stops at the same
/// depth).
pub const MAX_DEPTH: usize = 128;

/// How many nodes a document may hold once aliases are expanded: an alias is a copy of the node it
/// names, so a few lines of nested aliases ("billion laughs") would otherwise expand to billions.
pub const MAX_NODES: usize = 100_000;

/// Reads the first document of `text` into a tree. An empty document is an empty plain scalar.
/// A document nested deeper than [`MAX_DEPTH`] or larger than [`MAX_NODES`] nodes (aliases
/// expanded) is refused with an error at the node that went over.
pub fn index(text: &str) -> Result<Node, ScanError> {
    let mut reader = Reader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
    };
    loop {
        match reader.next()? {
            (Event::StreamStart | Event::DocumentStart(_), _) => {}
            (Event::StreamEnd | Event::DocumentEnd, span) => return Ok(empty(span)),
            (event, span) => return reader.node(event, span, 0).map(|(node, _)| node),
        }
    }
}

/// The parser and what has been read so far: anchored nodes with their sizes, and the node count.
struct Reader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), ScanError> {
        self.parser.next_event().unwrap_or_else(|| {
            let end = Marker::new(0, 1, 0);
            Ok((Event::StreamEnd, Span::new(end, end)))
        })
    }

    /// Counts `added` more nodes, refusing the document past [`MAX_NODES`].
    fn count(&mut self, added: usize, at: Marker) -> Result<(), ScanError> {
        self.nodes = self.nodes.saturating_add(added);
        if self.nodes > MAX_NODES {
            return Err(ScanError::new(
                at,
                format!(
                    "the document holds more than {MAX_NODES} values once aliases are expanded"
                ),
            ));
        }
        Ok(())
    }

    /// The node starting with `event`, at nesting `depth`, and its size in nodes.
    fn node(
        &mut self,
        event: Event<'a>,
        span: Span,
        depth: usize,
    ) -> Result<(Node, usize), ScanError> {
        if matches!(event, Event::SequenceStart(..) | Event::MappingStart(..)) && depth >= MAX_DEPTH
        {
            return Err(ScanError::new(
                span.start,
                format!("collections are nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        let (anchor, node, size) = match event {
            Event::Scalar(value, style, anchor, _) => {
                self.count(1, span.start)?;
                (
                    anchor,
                    Node {
                        start: span.start,
                        end: span.end,
                        kind: Kind::Scalar {
                            value: value.into_owned(),
                            style,
                        },
                    },
                    1,
                )
            }
            Event::SequenceStart(anchor, _) => {
                self.count(1, span.start)?;
                let mut size = 1;
                let mut items = Vec::new();
                let end = loop {
                    match self.next()? {
                        (Event::SequenceEnd | Event::StreamEnd, end) => break end.end,
                        (event, span) => {
                            let (item, n) = self.node(event, span, depth + 1)?;
                            size += n;
                            items.push(item);
                        }
                    }
                };
                (
                    anchor,
                    Node {
                        start: span.start,
                        end,
                        kind: Kind::Seq(items),
                    },
                    size,
                )
            }
            Event::MappingStart(anchor, _) => {
                self.count(1, span.start)?;
                let mut size = 1;
                let mut entries = Vec::new();
                let end = loop {
                    match self.next()? {
                        (Event::MappingEnd | Event::StreamEnd, end) => break end.end,
                        (event, span) => {
                            let (key, k) = self.node(event, span, depth + 1)?;
                            let (event, span) = self.next()?;
                            let (value, v) = self.node(event, span, depth + 1)?;
                            size += k + v;
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
                    size,
                )
            }
            Event::Alias(id) => {
                let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
                    return Ok((empty(span), 1));
                };
                // Counted before the copy is made, so an alias bomb is refused without building it.
                self.count(size, span.start)?;
                let node = self.anchors[&id].0.clone();
                return Ok((node, size));
            }
            _ => return Ok((empty(span), 1)),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        Ok((node, size))
    }
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

    /// Where the value at `path` (a key per mapping) starts, or its item `index` when it is a
    /// sequence that has one; 0:0 when the text has no such value (a default, say).
    pub fn pos_at(&self, path: &[&str], index: Option<usize>) -> Pos {
        let mut node = Some(self);
        for key in path {
            node = node.and_then(|n| n.get(key));
        }
        if let (Some(i), Some(n)) = (index, node) {
            node = n.at(i).or(Some(n));
        }
        node.map_or(Pos { line: 0, column: 0 }, Node::pos)
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

    #[test]
    fn deep_nesting_is_refused_at_the_level_that_goes_over() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(index(&ok).is_ok());
        // Block style too: each level one more indented mapping.
        let deep: String = (0..=MAX_DEPTH)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let error = index(&deep).unwrap_err();
        assert!(
            error.info().contains("nested more than 128 levels"),
            "{error}"
        );
        assert_eq!(error.marker().line(), MAX_DEPTH + 1);
        // Deep flow collections: saphyr's scanner stops at 255 levels, which it reads ahead.
        let flow = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(index(&flow).unwrap_err().marker().line(), 1);
    }

    #[test]
    fn an_alias_bomb_is_refused_without_being_expanded() {
        let mut text = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
            ));
        }
        let error = index(&text).unwrap_err();
        assert!(error.info().contains("more than 100000 values"), "{error}");
        // 10 + 110 + 1110 + 11110 + 111110: the fifth level goes over.
        assert_eq!(error.marker().line(), 5);
        // A few aliases of a small anchor are fine.
        let root = index("a: &a [1, 2]\nb: [*a, *a, *a]\n").unwrap();
        assert_eq!(find(&root, &["b", "2", "1"]).as_str(), Some("2"));
    }
}
