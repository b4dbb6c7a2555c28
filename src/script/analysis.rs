//! Static checks of compiled Rhai, for `cordon validate`: what an expression reads from the data it
//! is given (every field against that data's [`Shape`], and the types operators combine), and
//! which functions a script calls (against the engine's functions and the script's own).
//!
//! Rhai itself would not say: a field that is not there reads as `()`, and comparing values of two
//! types is `false`, so `alert.severity >= 7` (a map against a number) runs without an error and
//! never holds. Findings are located within the Rhai text, 1-based, like [`super::ScriptError`].

use std::collections::{BTreeMap, BTreeSet};

use rhai::{AST, ASTNode, Engine, Expr, FnCallExpr, Position, Stmt};

use super::shape::Shape;

/// One problem found, within the Rhai text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl Finding {
    fn at(pos: Position, message: String, hint: Option<String>) -> Finding {
        Finding {
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            message,
            hint,
        }
    }
}

/// What a piece of Rhai must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A condition: true or false.
    Bool,
    /// A list (`foreach.items`).
    List,
    /// Anything.
    Any,
}

/// The functions an engine knows, by name, with the numbers of arguments each takes (a method's
/// object counts as its first argument).
#[derive(Debug, Clone, Default)]
pub struct KnownFunctions {
    arities: BTreeMap<String, BTreeSet<usize>>,
}

/// Functions Rhai handles itself rather than registering: any number of arguments is accepted.
const KEYWORDS: [&str; 9] = [
    "print",
    "debug",
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "is_def_var",
    "is_def_fn",
];

impl KnownFunctions {
    /// Every function `engine` has: registered ones and its standard packages'.
    pub fn of(engine: &Engine) -> KnownFunctions {
        let mut arities: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (name, params) in engine.collect_fn_metadata(
            None,
            |info| Some((info.metadata.name.to_string(), info.metadata.num_params)),
            true,
        ) {
            arities.entry(name).or_default().insert(params);
        }
        KnownFunctions { arities }
    }

    /// Whether some type has a property getter `name` (`s.len`, `range.start`).
    fn has_getter(&self, name: &str) -> bool {
        self.arities.contains_key(&format!("get${name}"))
    }

    /// The names a script may call, for "did you mean".
    fn callable(&self) -> impl Iterator<Item = &str> {
        self.arities
            .keys()
            .map(String::as_str)
            .filter(|n| n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
            .filter(|n| !n.contains('$'))
    }
}

/// Checks every function `ast` calls: a function of `known`, one the script defines, a Rhai
/// keyword, or a local variable holding a function pointer; with a number of arguments one of them
/// takes.
pub fn check_calls(ast: &AST, known: &KnownFunctions) -> Vec<Finding> {
    let mut own: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut locals: BTreeSet<String> = BTreeSet::new();
    for f in ast.iter_functions() {
        own.entry(f.name.to_owned())
            .or_default()
            .insert(f.params.len());
        locals.extend(f.params.iter().map(|p| (*p).to_owned()));
    }
    // (name, arguments, where, whether it is a method call)
    let mut calls: Vec<(String, usize, Position, bool)> = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Stmt(Stmt::Var(x, ..))) => {
                locals.insert(x.0.name.to_string());
            }
            Some(ASTNode::Stmt(Stmt::For(x, ..))) => {
                locals.insert(x.0.name.to_string());
                if let Some(counter) = &x.1 {
                    locals.insert(counter.name.to_string());
                }
            }
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos)))
            | Some(ASTNode::Expr(Expr::FnCall(call, pos)))
                if call.op_token.is_none() =>
            {
                calls.push((call.name.to_string(), call.args.len(), *pos, false));
            }
            Some(ASTNode::Expr(Expr::MethodCall(call, pos))) => {
                calls.push((call.name.to_string(), call.args.len(), *pos, true));
            }
            _ => {}
        }
        true
    });

    let mut found = Vec::new();
    for (name, given, pos, method) in calls {
        let name = name.as_str();
        if KEYWORDS.contains(&name) || locals.contains(name) || name.contains('$') {
            continue;
        }
        let script = own.get(name);
        let native = known.arities.get(name);
        let fits = script.is_some_and(|a| a.contains(&given))
            || native.is_some_and(|a| a.contains(&(given + usize::from(method))))
            // A script's function called as a method binds `this`, which is not a parameter.
            || (method && script.is_some_and(|a| a.contains(&(given + 1))));
        if fits {
            continue;
        }
        if script.is_some() || native.is_some() {
            let mut takes: BTreeSet<usize> = BTreeSet::new();
            takes.extend(script.into_iter().flatten().copied());
            takes.extend(
                native
                    .into_iter()
                    .flatten()
                    .map(|n| n.saturating_sub(usize::from(method))),
            );
            let takes: Vec<String> = takes.iter().map(usize::to_string).collect();
            found.push(Finding::at(
                pos,
                format!(
                    "`{name}` takes {} {}, not {given}",
                    takes.join(" or "),
                    if takes == ["1"] {
                        "argument"
                    } else {
                        "arguments"
                    }
                ),
                None,
            ));
            continue;
        }
        let candidates: Vec<&str> = own
            .keys()
            .map(String::as_str)
            .chain(known.callable())
            .collect();
        let hint = did_you_mean(name, candidates);
        let what = if method { "method" } else { "function" };
        found.push(Finding::at(pos, format!("no {what} `{name}`"), hint));
    }
    found.sort_by_key(|f| (f.line, f.column));
    found
}

/// Checks what `ast` reads from `roots` (variable name → the shape of its value) and the types
/// operators combine where both are known; `want` is what the whole must give.
pub fn check_reads(
    ast: &AST,
    roots: &BTreeMap<&str, Shape>,
    known: &KnownFunctions,
    want: Want,
) -> Vec<Finding> {
    // A script that declares a variable of a root's name reads its own value, not the root.
    let mut shadowed = BTreeSet::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Var(x, ..))) = path.last() {
            shadowed.insert(x.0.name.to_string());
        }
        if let Some(ASTNode::Stmt(Stmt::For(x, ..))) = path.last() {
            shadowed.insert(x.0.name.to_string());
        }
        true
    });
    for f in ast.iter_functions() {
        shadowed.extend(f.params.iter().map(|p| (*p).to_owned()));
    }
    let roots: BTreeMap<&str, &Shape> = roots
        .iter()
        .filter(|(name, _)| !shadowed.contains(**name))
        .map(|(name, shape)| (*name, shape))
        .collect();
    let reader = Reader {
        roots: &roots,
        known,
    };

    let mut found = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let expr = match path.last() {
            Some(ASTNode::Expr(expr)) => *expr,
            // A call standing as a statement (`a >= 7` as a whole script) is kept as one.
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => {
                if call.op_token.is_some() {
                    reader.operator(call, *pos, &mut found);
                }
                return true;
            }
            _ => return true,
        };
        // The target of an assignment is written, not read.
        if let [.., ASTNode::Stmt(Stmt::Assignment(x)), _] = path
            && std::ptr::eq(&x.1.lhs, expr)
        {
            return true;
        }
        reader.check(expr, &mut found);
        true
    });
    let last = match ast.statements().last() {
        Some(Stmt::Expr(last)) => Some((**last).clone()),
        Some(Stmt::FnCall(call, pos)) => Some(Expr::FnCall(call.clone(), *pos)),
        _ => None,
    };
    if want != Want::Any
        && let Some(last) = &last
        && let Some(shape) = reader.shape(last)
    {
        let fits = match want {
            Want::Bool => matches!(shape, Shape::Bool),
            Want::List => matches!(shape, Shape::List(_)),
            Want::Any => true,
        };
        if !fits && shape != Shape::Any {
            let message = match want {
                Want::Bool => format!(
                    "a condition must be true or false, but {} is {}",
                    reader.name(last).unwrap_or_else(|| "it".into()),
                    shape.described()
                ),
                _ => format!(
                    "this must give a list, but {} is {}",
                    reader.name(last).unwrap_or_else(|| "it".into()),
                    shape.described()
                ),
            };
            found.push(Finding::at(
                last.start_position(),
                message,
                fields_hint(&reader, last),
            ));
        }
    }
    found.sort_by_key(|f| (f.line, f.column));
    found.dedup();
    found
}

/// One step of a chain of reads: `.name`, `[index]`, or a method call (after which nothing is known).
enum Segment<'a> {
    Property(&'a str, Position),
    Index(&'a Expr),
    Method,
}

/// Puts a chain (`alert.resource.tags["x"].y`, parsed by Rhai as nested `Dot`/`Index` nodes) in
/// order: its root and its segments.
fn chain(expr: &Expr) -> Option<(&str, Position, Vec<Segment<'_>>)> {
    let (Expr::Dot(x, ..) | Expr::Index(x, ..)) = expr else {
        return None;
    };
    let Expr::Variable(var, ..) = &x.lhs else {
        return None;
    };
    let mut segments = Vec::new();
    flatten(&x.rhs, matches!(expr, Expr::Index(..)), &mut segments);
    Some((var.1.as_str(), x.lhs.start_position(), segments))
}

fn flatten<'a>(expr: &'a Expr, indexed: bool, out: &mut Vec<Segment<'a>>) {
    let lead = |e: &'a Expr, out: &mut Vec<Segment<'a>>| {
        out.push(if indexed {
            Segment::Index(e)
        } else {
            match e {
                Expr::Property(p, pos) => Segment::Property(p.2.as_str(), *pos),
                _ => Segment::Method,
            }
        });
    };
    match expr {
        Expr::Dot(x, ..) => {
            lead(&x.lhs, out);
            flatten(&x.rhs, false, out);
        }
        Expr::Index(x, ..) => {
            lead(&x.lhs, out);
            flatten(&x.rhs, true, out);
        }
        other => lead(other, out),
    }
}

/// A chain that went wrong: where, and what to say.
struct Wrong {
    pos: Position,
    message: String,
    hint: Option<String>,
}

struct Reader<'a> {
    roots: &'a BTreeMap<&'a str, &'a Shape>,
    known: &'a KnownFunctions,
}

impl Reader<'_> {
    /// Follows a chain from its root: the shape it reads (`None` when it cannot be known, as after a
    /// method call), or what is wrong with it.
    fn follow(&self, expr: &Expr) -> Option<Result<Shape, Wrong>> {
        let (root, _, segments) = chain(expr)?;
        let mut shape: Shape = (*self.roots.get(root)?).clone();
        let mut name = root.to_owned();
        for segment in segments {
            let (key, pos) = match segment {
                Segment::Method => return None,
                Segment::Property(key, pos) => (Some(key), pos),
                Segment::Index(Expr::StringConstant(key, pos)) => (Some(key.as_str()), *pos),
                Segment::Index(_) => {
                    // An index computed at run time: any item of a list, any value of a map.
                    shape = match shape {
                        Shape::List(item) => *item,
                        Shape::Dict(value) => *value,
                        Shape::String => Shape::String,
                        _ => Shape::Any,
                    };
                    name.push_str("[…]");
                    continue;
                }
            };
            let key = key.unwrap_or_default();
            shape = match &shape {
                Shape::Record(fields) => match fields.get(key) {
                    Some(field) => field.clone(),
                    None => {
                        let hint = did_you_mean(key, fields.keys().map(String::as_str))
                            .or_else(|| Some(format!("its fields are {}", list(fields.keys()))));
                        return Some(Err(Wrong {
                            pos,
                            message: format!("`{name}` has no field `{key}`"),
                            hint,
                        }));
                    }
                },
                Shape::Dict(value) => (**value).clone(),
                Shape::Any => Shape::Any,
                Shape::List(_) | Shape::String if self.known.has_getter(key) => Shape::Any,
                Shape::Bool | Shape::Number if self.known.has_getter(key) => Shape::Any,
                other => {
                    return Some(Err(Wrong {
                        pos,
                        message: format!(
                            "`{name}` is {}; it has no field `{key}`",
                            other.described()
                        ),
                        hint: None,
                    }));
                }
            };
            name.push('.');
            name.push_str(key);
        }
        Some(Ok(shape))
    }

    /// What `expr` gives, when that is known.
    fn shape(&self, expr: &Expr) -> Option<Shape> {
        match expr {
            Expr::BoolConstant(..) => Some(Shape::Bool),
            Expr::IntegerConstant(..) | Expr::FloatConstant(..) => Some(Shape::Number),
            Expr::StringConstant(..) | Expr::CharConstant(..) | Expr::InterpolatedString(..) => {
                Some(Shape::String)
            }
            Expr::Array(..) => Some(Shape::List(Box::new(Shape::Any))),
            Expr::Map(..) => Some(Shape::Dict(Box::new(Shape::Any))),
            Expr::Variable(var, ..) => self.roots.get(var.1.as_str()).map(|s| (*s).clone()),
            Expr::Dot(..) | Expr::Index(..) => self.follow(expr)?.ok(),
            Expr::And(..) | Expr::Or(..) => Some(Shape::Bool),
            Expr::FnCall(call, _) if call.op_token.is_some() => {
                match (call.name.as_str(), call.args.as_slice()) {
                    ("==" | "!=" | "<" | "<=" | ">" | ">=" | "!", _) => Some(Shape::Bool),
                    ("+", [a, b]) => match (self.shape(a)?, self.shape(b)?) {
                        (Shape::String, _) | (_, Shape::String) => Some(Shape::String),
                        (Shape::Number, Shape::Number) => Some(Shape::Number),
                        _ => None,
                    },
                    ("-" | "*" | "/" | "%" | "**", [a, b]) => {
                        match (self.shape(a)?, self.shape(b)?) {
                            (Shape::Number, Shape::Number) => Some(Shape::Number),
                            _ => None,
                        }
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// `` `alert.severity` `` for a chain or a root; `None` for anything else.
    fn name(&self, expr: &Expr) -> Option<String> {
        let (root, _, segments) = match expr {
            Expr::Variable(var, ..) => return Some(format!("`{}`", var.1)),
            other => chain(other)?,
        };
        let mut name = root.to_owned();
        for segment in segments {
            match segment {
                Segment::Property(key, _) => {
                    name.push('.');
                    name.push_str(key);
                }
                Segment::Index(Expr::StringConstant(key, _)) => {
                    name.push_str(&format!("[{key:?}]"));
                }
                Segment::Index(Expr::IntegerConstant(i, _)) => name.push_str(&format!("[{i}]")),
                Segment::Index(_) => name.push_str("[…]"),
                Segment::Method => return None,
            }
        }
        Some(format!("`{name}`"))
    }

    /// `` `alert.severity` (a map) `` or `a number`.
    fn operand(&self, expr: &Expr, shape: &Shape) -> String {
        match self.name(expr) {
            Some(name) => format!("{name} ({})", shape.described()),
            None => shape.described().to_owned(),
        }
    }

    fn check(&self, expr: &Expr, found: &mut Vec<Finding>) {
        match expr {
            Expr::Dot(..) | Expr::Index(..) => {
                if let Some(Err(wrong)) = self.follow(expr) {
                    found.push(Finding::at(wrong.pos, wrong.message, wrong.hint));
                }
            }
            Expr::And(operands, pos) | Expr::Or(operands, pos) => {
                let op = if matches!(expr, Expr::And(..)) {
                    "&&"
                } else {
                    "||"
                };
                for operand in operands.iter() {
                    if let Some(shape) = self.shape(operand)
                        && !matches!(shape, Shape::Bool | Shape::Any)
                    {
                        found.push(Finding::at(
                            operand.start_position().or_else(*pos),
                            format!(
                                "`{op}` needs true or false on each side, but {} is {}",
                                self.name(operand).unwrap_or_else(|| "one side".into()),
                                shape.described()
                            ),
                            fields_hint(self, operand),
                        ));
                    }
                }
            }
            Expr::FnCall(call, pos) if call.op_token.is_some() => self.operator(call, *pos, found),
            _ => {}
        }
    }

    fn operator(&self, call: &FnCallExpr, pos: Position, found: &mut Vec<Finding>) {
        let op = call.name.as_str();
        if let ("!", [operand]) = (op, call.args.as_slice()) {
            if let Some(shape) = self.shape(operand)
                && !matches!(shape, Shape::Bool | Shape::Any)
            {
                found.push(Finding::at(
                    operand.start_position().or_else(pos),
                    format!(
                        "`!` needs true or false, but {} is {}",
                        self.name(operand).unwrap_or_else(|| "its operand".into()),
                        shape.described()
                    ),
                    fields_hint(self, operand),
                ));
            }
            return;
        }
        let [a, b] = call.args.as_slice() else {
            return;
        };
        let (Some(sa), Some(sb)) = (self.shape(a), self.shape(b)) else {
            return;
        };
        if sa == Shape::Any || sb == Shape::Any {
            return;
        }
        let same = std::mem::discriminant(&kind(&sa)) == std::mem::discriminant(&kind(&sb));
        let problem = match op {
            "<" | "<=" | ">" | ">=" => {
                let ordered = matches!(
                    (&sa, &sb),
                    (Shape::Number, Shape::Number) | (Shape::String, Shape::String)
                );
                (!ordered).then(|| {
                    format!(
                        "`{op}` compares {} with {}, which is always false",
                        self.operand(a, &sa),
                        self.operand(b, &sb)
                    )
                })
            }
            "==" | "!=" => (!same).then(|| {
                format!(
                    "`{op}` compares {} with {}, which are never equal",
                    self.operand(a, &sa),
                    self.operand(b, &sb)
                )
            }),
            "+" => {
                let fine = matches!((&sa, &sb), (Shape::String, _) | (_, Shape::String)) || same;
                (!fine).then(|| {
                    format!(
                        "`+` cannot add {} and {}",
                        self.operand(a, &sa),
                        self.operand(b, &sb)
                    )
                })
            }
            "-" | "*" | "/" | "%" | "**" => {
                let fine = matches!((&sa, &sb), (Shape::Number, Shape::Number));
                (!fine).then(|| {
                    format!(
                        "`{op}` needs numbers, but it has {} and {}",
                        self.operand(a, &sa),
                        self.operand(b, &sb)
                    )
                })
            }
            _ => None,
        };
        if let Some(message) = problem {
            // Point at the side that is not a plain value (the map or list read by mistake).
            let culprit = if matches!(sb, Shape::Record(_) | Shape::Dict(_) | Shape::List(_))
                && !matches!(sa, Shape::Record(_) | Shape::Dict(_) | Shape::List(_))
            {
                b
            } else {
                a
            };
            found.push(Finding::at(
                culprit.start_position().or_else(pos),
                message,
                fields_hint(self, culprit),
            ));
        }
    }
}

/// The kind of a shape, for "same type" (a record and a dict are both maps).
fn kind(shape: &Shape) -> Shape {
    match shape {
        Shape::Record(_) | Shape::Dict(_) => Shape::Dict(Box::new(Shape::Any)),
        Shape::List(_) => Shape::List(Box::new(Shape::Any)),
        other => other.clone(),
    }
}

/// For a chain that reads a map with named fields: what those fields are (`alert.severity` is a
/// map: `alert.severity.score` (a number), ...).
fn fields_hint(reader: &Reader, expr: &Expr) -> Option<String> {
    let Some(Ok(Shape::Record(fields))) = reader.follow(expr).or_else(|| {
        if let Expr::Variable(var, ..) = expr {
            reader.roots.get(var.1.as_str()).map(|s| Ok((*s).clone()))
        } else {
            None
        }
    }) else {
        return None;
    };
    let name = reader.name(expr)?;
    let bare = name.trim_matches('`');
    let listed: Vec<String> = fields
        .iter()
        .map(|(key, shape)| format!("`{bare}.{key}` ({})", shape.described()))
        .collect();
    Some(format!("{name} is a map: {}", listed.join(", ")))
}

/// "did you mean `x`?" for the candidate closest to `name`, when one is close.
fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, best)| format!("did you mean `{best}`?"))
}

fn list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Shape {
        let severity = Shape::Record(
            [
                ("score".to_owned(), Shape::Number),
                ("native".to_owned(), Shape::String),
            ]
            .into(),
        );
        let resource = Shape::Record(
            [
                ("kind".to_owned(), Shape::String),
                ("id".to_owned(), Shape::String),
            ]
            .into(),
        );
        Shape::Record(
            [
                ("severity".to_owned(), severity),
                ("resource".to_owned(), resource),
                ("title".to_owned(), Shape::String),
                ("labels".to_owned(), Shape::Dict(Box::new(Shape::String))),
                ("raw".to_owned(), Shape::Any),
                ("tags".to_owned(), Shape::List(Box::new(Shape::String))),
            ]
            .into(),
        )
    }

    fn found(code: &str, want: Want) -> Vec<String> {
        let engine = Engine::new();
        let mut scope = rhai::Scope::new();
        for name in ["alert", "steps"] {
            scope.push(name, ());
        }
        let ast = engine.compile_with_scope(&scope, code).unwrap();
        let roots = BTreeMap::from([("alert", alert())]);
        let known = KnownFunctions::of(&engine);
        check_reads(&ast, &roots, &known, want)
            .into_iter()
            .chain(check_calls(&ast, &known))
            .map(|f| format!("{}:{} {}", f.line, f.column, f.message))
            .collect()
    }

    #[test]
    fn a_map_compared_with_a_number_is_found_with_the_fields_it_has() {
        let engine = Engine::new();
        let mut scope = rhai::Scope::new();
        scope.push("alert", ());
        let ast = engine
            .compile_with_scope(&scope, "alert.severity >= 7")
            .unwrap();
        let roots = BTreeMap::from([("alert", alert())]);
        let found = check_reads(&ast, &roots, &KnownFunctions::of(&engine), Want::Bool);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].line, found[0].column), (1, 1));
        assert_eq!(
            found[0].message,
            "`>=` compares `alert.severity` (a map) with a number, which is always false"
        );
        assert_eq!(
            found[0].hint.as_deref(),
            Some(
                "`alert.severity` is a map: `alert.severity.native` (a string), `alert.severity.score` (a number)"
            )
        );
    }

    #[test]
    fn reads_and_operators_are_checked_where_types_are_known() {
        assert!(
            found(
                "alert.severity.score >= 7 && alert.resource.kind == \"aws.ec2.instance\"",
                Want::Bool
            )
            .is_empty()
        );
        assert!(
            found(
                "alert.labels.team == \"x\" && alert.raw.detail.anything > 3",
                Want::Bool
            )
            .is_empty()
        );
        assert!(
            found(
                "steps.a.output.x > 3 && alert.tags.len() > 0 && alert.title.len > 2",
                Want::Bool
            )
            .is_empty()
        );
        assert!(found("alert.resource.id != ()", Want::Bool).is_empty());
        assert_eq!(
            found("alert.severty > 3", Want::Bool),
            ["1:7 `alert` has no field `severty`"]
        );
        assert_eq!(
            found("alert[\"resource\"].knd == \"x\"", Want::Bool),
            ["1:19 `alert.resource` has no field `knd`"]
        );
        assert_eq!(
            found("alert.severity == \"high\"", Want::Bool),
            ["1:1 `==` compares `alert.severity` (a map) with a string, which are never equal"]
        );
        assert_eq!(
            found("alert.severity.score.x", Want::Any),
            ["1:22 `alert.severity.score` is a number; it has no field `x`"]
        );
        assert_eq!(
            found("alert.severity.score", Want::Bool),
            ["1:1 a condition must be true or false, but `alert.severity.score` is a number"]
        );
        assert_eq!(
            found("1 + alert.severity", Want::Any),
            ["1:5 `+` cannot add a number and `alert.severity` (a map)"]
        );
        assert_eq!(
            found("alert.title && alert.severity.score > 1", Want::Bool),
            ["1:1 `&&` needs true or false on each side, but `alert.title` is a string"]
        );
        // A script's own variable of the same name is its own.
        assert!(found("let alert = #{}; alert.anything", Want::Any).is_empty());
        // Assigning creates a field; it is not a read.
        assert!(found("let a = 1; alert.extra = 2; a", Want::Any).is_empty());
    }

    #[test]
    fn calls_name_functions_that_exist_with_arguments_they_take() {
        assert!(
            found(
                "fn f(x) { x.len() + to_string(1).len() } let g = |y| y; g(1) + f(\"a\")",
                Want::Any
            )
            .is_empty()
        );
        assert_eq!(
            found("let x = retry_latr(\"no\");\nx", Want::Any),
            ["1:9 no function `retry_latr`"]
        );
        assert_eq!(
            found("fn helper(a, b) { a + b }\nhelper(1)", Want::Any),
            ["2:1 `helper` takes 2 arguments, not 1"]
        );
        assert_eq!(
            found("alert.title.contians(\"x\")", Want::Any),
            ["1:13 no method `contians`"]
        );
    }
}
