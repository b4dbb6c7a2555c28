//! The hardened engine: limits, a deadline, and a scope with exactly the playbook's names.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use rhai::{Dynamic, Engine, EvalAltResult, OptimizationLevel, ParseError, Position, Scope};
use serde_json::Value;

use super::analysis::{self, Finding, KnownFunctions, Want};
use super::shape::Shape;
use super::{Context, Expr, Limits, ScriptError};

/// The names every playbook expression may read.
pub const NAMES: [&str; 5] = ["alert", "incident", "steps", "vars", "inputs"];

thread_local! {
    /// The deadline of the evaluation running on this thread. `on_progress` is per engine, and one
    /// engine serves every thread, so the deadline lives with the thread doing the evaluation.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The one Rhai engine, shared by every playbook (`Send + Sync`).
pub struct Scripts {
    engine: Engine,
    limits: Limits,
    /// The engine's functions, for `cordon validate`'s check of what scripts call.
    known: KnownFunctions,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripts")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new(Limits::default())
    }
}

impl Scripts {
    pub fn new(limits: Limits) -> Scripts {
        let mut engine = limits.sandbox();
        // Variables are pushed as plain (not constant) scope entries when compiling, so the
        // optimizer cannot fold one alert's values into an AST reused for the next.
        engine.set_optimization_level(OptimizationLevel::Simple);
        engine.on_print(|text| tracing::info!(target: "cordon::script", "{text}"));
        engine.on_debug(
            |text, _, pos| tracing::debug!(target: "cordon::script", position = %pos, "{text}"),
        );
        engine.on_progress(|ops| {
            if ops % 1024 == 0 {
                let late =
                    DEADLINE.with(|d| d.get().is_some_and(|deadline| Instant::now() > deadline));
                if late {
                    return Some(Dynamic::from("deadline"));
                }
            }
            None
        });
        let known = KnownFunctions::of(&engine);
        Scripts {
            engine,
            limits,
            known,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn compile_scope(extra: &[&str]) -> Scope<'static> {
        let mut scope = Scope::new();
        for name in NAMES.iter().chain(extra) {
            scope.push(name.to_string(), Dynamic::UNIT);
        }
        scope
    }

    /// Compiles one expression (`when`, `if`, `concurrency`, `foreach.items`, a template's inside).
    /// `extra` names more readable variables (a `foreach` item).
    pub fn compile_expr(&self, source: &str, extra: &[&str]) -> Result<Expr, ScriptError> {
        let scope = Scripts::compile_scope(extra);
        let ast = self
            .engine
            .compile_expression_with_scope(&scope, source)
            .map_err(parse_error)?;
        Ok(Expr {
            ast: std::sync::Arc::new(ast),
            source: source.to_owned(),
            reads: super::names_in(source),
            straight: super::is_straight(source),
        })
    }

    /// Compiles a script (statements; the last expression is its value).
    pub fn compile_script(&self, source: &str, extra: &[&str]) -> Result<Expr, ScriptError> {
        let scope = Scripts::compile_scope(extra);
        let ast = self
            .engine
            .compile_with_scope(&scope, source)
            .map_err(parse_error)?;
        Ok(Expr {
            ast: std::sync::Arc::new(ast),
            source: source.to_owned(),
            reads: super::names_in(source),
            straight: super::is_straight(source),
        })
    }

    /// Evaluates `expr` in `ctx`, under the limits and the deadline. Never panics: a panic inside
    /// the engine becomes an error. Call it from a blocking thread (`spawn_blocking`), not from an
    /// async task.
    pub fn eval(&self, expr: &Expr, ctx: &Context) -> Result<Value, ScriptError> {
        let mut scope = Scope::new();
        let values = [
            &ctx.alert,
            &ctx.incident,
            &ctx.steps,
            &ctx.vars,
            &ctx.inputs,
        ];
        for (i, (name, value)) in NAMES.iter().zip(values).enumerate() {
            // Converting the context is most of an evaluation's cost: only what the text names.
            let value = if expr.reads & (1 << i) != 0 {
                to_dynamic(value)?
            } else {
                Dynamic::UNIT
            };
            scope.push(*name, value);
        }
        if let Some((name, value)) = &ctx.item {
            scope.push(name.clone(), to_dynamic(value)?);
        }
        DEADLINE.with(|d| d.set(Some(Instant::now() + self.limits.timeout)));
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, &expr.ast)
        }));
        DEADLINE.with(|d| d.set(None));
        let value = match outcome {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => return Err(self.eval_error(*error)),
            Err(_) => {
                return Err(ScriptError {
                    message: "the script engine failed on this script".into(),
                    line: 0,
                    column: 0,
                });
            }
        };
        from_dynamic(&value)
    }

    /// The static checks of `expr` (see [`analysis`]): the fields it reads from `roots`, the types
    /// its operators combine, the functions it calls, and whether it gives what is wanted.
    pub fn check(&self, expr: &Expr, roots: &BTreeMap<&str, Shape>, want: Want) -> Vec<Finding> {
        let mut found = analysis::check_reads(&expr.ast, roots, &self.known, want);
        found.extend(analysis::check_calls(&expr.ast, &self.known));
        found.sort_by_key(|f| (f.line, f.column));
        found
    }

    /// Evaluates `expr` on sample data, for `cordon validate`: the error, if the data's types cause
    /// one (a function or operator that does not take them, a condition that is not a bool).
    /// Errors that only a missing value (`()`) causes are left out: whether a field is set depends
    /// on the alert. `extra` names the `foreach` items readable here, which are `()` in a check.
    pub fn type_error(
        &self,
        expr: &Expr,
        ctx: &Context,
        extra: &[&str],
        want: Want,
    ) -> Option<ScriptError> {
        let mut scope = Scope::new();
        for (name, value) in [
            ("alert", &ctx.alert),
            ("incident", &ctx.incident),
            ("steps", &ctx.steps),
            ("vars", &ctx.vars),
            ("inputs", &ctx.inputs),
        ] {
            scope.push(name, to_dynamic(value).ok()?);
        }
        for name in extra {
            scope.push(name.to_string(), Dynamic::UNIT);
        }
        DEADLINE.with(|d| d.set(Some(Instant::now() + self.limits.timeout)));
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, &expr.ast)
        }));
        DEADLINE.with(|d| d.set(None));
        match outcome {
            Ok(Ok(value)) => {
                let unit = value.is_unit();
                let wrong = match want {
                    Want::Bool => !value.is_bool(),
                    Want::List => !value.is_array(),
                    Want::Any => false,
                };
                (wrong && !unit).then(|| ScriptError {
                    message: format!(
                        "{} must give {}, but it gave {}",
                        if want == Want::Bool {
                            "a condition"
                        } else {
                            "this"
                        },
                        if want == Want::Bool {
                            "true or false"
                        } else {
                            "a list"
                        },
                        a_type(value.type_name())
                    ),
                    line: 0,
                    column: 0,
                })
            }
            Ok(Err(error)) => type_error(*error),
            Err(_) => None,
        }
    }

    /// Evaluates a condition: it must give `true` or `false`.
    pub fn eval_bool(&self, expr: &Expr, ctx: &Context) -> Result<bool, ScriptError> {
        match self.eval(expr, ctx)? {
            Value::Bool(b) => Ok(b),
            other => Err(ScriptError {
                message: format!(
                    "a condition must be true or false, but `{}` gave {}",
                    expr.source.trim(),
                    describe(&other)
                ),
                line: 0,
                column: 0,
            }),
        }
    }

    fn eval_error(&self, error: EvalAltResult) -> ScriptError {
        let (line, column) = position(error.position());
        let message = match &error {
            EvalAltResult::ErrorTerminated(..) => {
                format!(
                    "the script ran longer than its {:?} limit and was stopped",
                    self.limits.timeout
                )
            }
            EvalAltResult::ErrorTooManyOperations(..) => {
                format!(
                    "the script exceeded its limit of {} operations and was stopped",
                    self.limits.max_operations
                )
            }
            other => strip_position(&other.to_string()),
        };
        ScriptError {
            message,
            line,
            column,
        }
    }
}

/// The error's type problem, in words, when the data's types (not a missing value) caused it.
fn type_error(error: EvalAltResult) -> Option<ScriptError> {
    let (line, column) = position(error.position());
    let message = match error {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => return type_error(*inner),
        EvalAltResult::ErrorFunctionNotFound(signature, _) => {
            let (name, types) = signature.split_once(" (")?;
            let types = types.strip_suffix(')').unwrap_or(types);
            if types.split(", ").any(|t| t == "()") {
                return None;
            }
            let types: Vec<&str> = types.split(", ").map(a_type).collect();
            format!("`{name}` cannot take {}", types.join(" and "))
        }
        EvalAltResult::ErrorMismatchDataType(expected, actual, _) => {
            if actual == "()" {
                return None;
            }
            format!(
                "expected {}, but it is {}",
                a_type(&expected),
                a_type(&actual)
            )
        }
        EvalAltResult::ErrorDotExpr(message, _) if !message.contains("'()'") => message,
        _ => return None,
    };
    Some(ScriptError {
        message,
        line,
        column,
    })
}

/// A Rhai type name in words: `a map`, `a number`.
fn a_type(name: &str) -> &str {
    match name {
        "i64" | "f64" | "i32" | "u8" | "int" | "float" | "INT" | "FLOAT" => "a number",
        "string" | "&str | ImmutableString | String" | "ImmutableString" | "char" => "a string",
        "map" | "Map" => "a map",
        "array" | "Array" => "a list",
        "bool" => "a bool",
        "()" => "nothing (())",
        other => other,
    }
}

fn position(pos: Position) -> (usize, usize) {
    (pos.line().unwrap_or(0), pos.position().unwrap_or(0))
}

/// Rhai appends " (line L, position P)"; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn parse_error(error: ParseError) -> ScriptError {
    let (line, column) = position(error.1);
    ScriptError {
        message: strip_position(&error.0.to_string()),
        line,
        column,
    }
}

fn to_dynamic(value: &Value) -> Result<Dynamic, ScriptError> {
    rhai::serde::to_dynamic(value).map_err(|e| ScriptError {
        message: e.to_string(),
        line: 0,
        column: 0,
    })
}

fn from_dynamic(value: &Dynamic) -> Result<Value, ScriptError> {
    rhai::serde::from_dynamic(value).map_err(|e| ScriptError {
        message: format!("the script's value cannot be used as data: {e}"),
        line: 0,
        column: 0,
    })
}

/// `a string`, `a number`, ... for messages.
pub fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (())",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn scripts_that_may_run_long_are_told_from_straight_ones() {
        use super::super::is_straight;
        assert!(is_straight("alert.kind == \"x\" && steps.a.ok"));
        assert!(is_straight("steps.each.output.map(|o| o.label.output)"));
        assert!(is_straight("alert.format + alert.done + alert.fnord"));
        assert!(!is_straight("let n = 0; for x in 0..10 { n += x } n"));
        assert!(!is_straight("while true {}"));
        assert!(!is_straight("loop { break; }"));
        assert!(!is_straight("fn twice(x) { x * 2 } twice(2)"));
        assert!(!is_straight("do { x += 1 } while x < 3"));
    }

    #[test]
    fn only_the_names_an_expression_writes_are_read() {
        use super::super::names_in;
        assert_eq!(names_in("alert.kind == \"x\""), 0b00001);
        assert_eq!(names_in("steps.a.output + incident.alert_count"), 0b00110);
        assert_eq!(names_in("my_alert + alerts + inputs_x"), 0);
        assert_eq!(names_in("vars.x + inputs.y"), 0b11000);
        let scripts = super::Scripts::default();
        let expr = scripts.compile_expr("steps.a.output + 1", &[]).unwrap();
        let ctx = super::Context {
            steps: json!({ "a": { "output": 41 } }),
            alert: json!({ "huge": "not converted" }),
            ..Default::default()
        };
        assert_eq!(scripts.eval(&expr, &ctx).unwrap(), json!(42));
    }

    use super::*;

    fn ctx(alert: Value) -> Context {
        Context {
            alert,
            ..Context::default()
        }
    }

    #[test]
    fn conditions_read_the_alert() {
        let s = Scripts::default();
        let when = s
            .compile_expr(
                r#"alert.severity >= 7 && alert.resource.kind == "aws.ec2.instance""#,
                &[],
            )
            .unwrap();
        let hit = ctx(json!({"severity": 8, "resource": {"kind": "aws.ec2.instance"}}));
        let miss = ctx(json!({"severity": 3, "resource": {"kind": "aws.ec2.instance"}}));
        assert!(s.eval_bool(&when, &hit).unwrap());
        assert!(!s.eval_bool(&when, &miss).unwrap());
        // The same compiled AST gives each alert its own answer (no constant folding across alerts).
        assert!(s.eval_bool(&when, &hit).unwrap());
    }

    #[test]
    fn unknown_variables_are_compile_errors_with_a_position() {
        let s = Scripts::default();
        let e = s
            .compile_script("let x = 1;\nx + secrets.key", &[])
            .unwrap_err();
        assert!(e.message.contains("secrets"), "{e:?}");
        assert_eq!((e.line, e.column), (2, 5));
        assert!(s.compile_expr("item.id", &["item"]).is_ok());
    }

    #[test]
    fn eval_and_modules_are_not_available() {
        let s = Scripts::default();
        assert!(
            s.compile_script(r#"eval("1")"#, &[])
                .unwrap_err()
                .message
                .contains("eval")
        );
        assert!(s.compile_script(r#"import "x" as y; 1"#, &[]).is_err());
    }

    #[test]
    fn a_runaway_script_is_stopped_with_a_clear_error() {
        let s = Scripts::new(Limits {
            max_operations: u64::MAX,
            timeout: std::time::Duration::from_millis(200),
            ..Limits::default()
        });
        let forever = s.compile_script("loop { }", &[]).unwrap();
        let started = Instant::now();
        let e = s.eval(&forever, &Context::default()).unwrap_err();
        assert!(e.message.contains("ran longer than"), "{e:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));

        let s = Scripts::new(Limits {
            max_operations: 10_000,
            ..Limits::default()
        });
        let e = s
            .eval(
                &s.compile_script("let n = 0; while true { n += 1 }", &[])
                    .unwrap(),
                &Context::default(),
            )
            .unwrap_err();
        assert!(e.message.contains("10000 operations"), "{e:?}");
    }

    #[test]
    fn sizes_are_limited() {
        let s = Scripts::new(Limits {
            max_string_size: 100,
            max_array_size: 10,
            ..Limits::default()
        });
        let e = s
            .eval(
                &s.compile_script(r#"let x = "a"; loop { x += x; }"#, &[])
                    .unwrap(),
                &Context::default(),
            )
            .unwrap_err();
        assert!(
            e.message.to_lowercase().contains("length") || e.message.contains("size"),
            "{e:?}"
        );
        let e = s
            .eval(
                &s.compile_script("let a = []; loop { a.push(1); }", &[])
                    .unwrap(),
                &Context::default(),
            )
            .unwrap_err();
        assert!(
            e.message.to_lowercase().contains("size")
                || e.message.to_lowercase().contains("length"),
            "{e:?}"
        );
    }

    #[test]
    fn assigning_to_the_alert_does_not_panic_the_host() {
        let s = Scripts::default();
        let script = s
            .compile_script("alert.severity = 1; alert.severity", &[])
            .unwrap();
        // Allowed on the evaluation's own copy; the caller's value is untouched.
        assert_eq!(
            s.eval(&script, &ctx(json!({"severity": 9}))).unwrap(),
            json!(1)
        );
    }

    #[test]
    fn scripts_return_data() {
        let s = Scripts::default();
        let script = s
            .compile_script(
                "let score = 60; #{ risky: score > 50, score: score, tags: [\"a\"] }",
                &[],
            )
            .unwrap();
        assert_eq!(
            s.eval(&script, &Context::default()).unwrap(),
            json!({"risky": true, "score": 60, "tags": ["a"]})
        );
        let not_bool = s.compile_expr("alert.severity", &[]).unwrap();
        assert!(
            s.eval_bool(&not_bool, &ctx(json!({"severity": 9})))
                .unwrap_err()
                .message
                .contains("true or false")
        );
    }
}
