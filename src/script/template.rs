//! `${{ expr }}` templates in playbook strings, and values (maps, lists) holding them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Context, Expr, ScriptError, Scripts};

/// A string with `${{ expr }}` parts, compiled.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    /// An expression, with the byte offset of its text (inside `${{ }}`) in the template's text.
    Expr(usize, Expr),
}

impl Template {
    /// Whether every expression in it is straight-line ([`Expr::is_straight`]).
    pub fn is_straight(&self) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Text(_) => true,
            Part::Expr(_, e) => e.is_straight(),
        })
    }

    /// Compiles `text`. An error's position is within `text` (line 1-based, column 1-based), so the
    /// loader can map it into the YAML file.
    pub fn compile(scripts: &Scripts, text: &str, extra: &[&str]) -> Result<Template, ScriptError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find("${{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let inner_start = start + 3;
            let Some(len) = rest[inner_start..].find("}}") else {
                let (line, column) = line_col(text, offset + start);
                return Err(ScriptError {
                    message: "`${{` is not closed with `}}`".into(),
                    line,
                    column,
                });
            };
            let inner = &rest[inner_start..inner_start + len];
            let expr = scripts.compile_expr(inner, extra).map_err(|e| {
                // Map the position inside the expression to the position inside the text.
                let base = offset + inner_start;
                let inner_offset = offset_of(inner, e.line.max(1), e.column.max(1));
                let (line, column) = line_col(text, base + inner_offset);
                ScriptError {
                    message: e.message,
                    line,
                    column,
                }
            })?;
            parts.push(Part::Expr(offset + inner_start, expr));
            let consumed = inner_start + len + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Whether the text has no `${{ }}` at all.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The template's expressions, each with the byte offset of its text in the template's text.
    pub fn exprs(&self) -> impl Iterator<Item = (usize, &Expr)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(offset, expr) => Some((*offset, expr)),
            Part::Text(_) => None,
        })
    }

    /// Renders the template. A text that is exactly one `${{ expr }}` keeps the value's type (a map
    /// stays a map, a number a number); otherwise the parts are joined as text.
    pub fn render(&self, scripts: &Scripts, ctx: &Context) -> Result<Value, ScriptError> {
        if let [Part::Expr(_, expr)] = self.parts.as_slice() {
            return scripts.eval(expr, ctx);
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Expr(_, expr) => match scripts.eval(expr, ctx)? {
                    Value::String(s) => out.push_str(&s),
                    Value::Null => {}
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(Value::String(out))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split('\n').enumerate() {
        if i + 1 == line {
            return offset
                + l.char_indices()
                    .nth(column - 1)
                    .map(|(b, _)| b)
                    .unwrap_or(l.len());
        }
        offset += l.len() + 1;
    }
    0
}

/// A value from the playbook (in `with`, `vars`, `outputs`, `call.inputs`) whose strings may hold
/// templates.
#[derive(Debug, Clone)]
pub enum CompiledValue {
    Literal(Value),
    Template(Template),
    List(Vec<CompiledValue>),
    Map(BTreeMap<String, CompiledValue>),
}

/// Where in a value a template failed: `ip`, `headers.x`, `items[2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub path: String,
    pub error: ScriptError,
}

impl CompiledValue {
    pub fn compile(
        scripts: &Scripts,
        value: &Value,
        extra: &[&str],
    ) -> Result<CompiledValue, ValueError> {
        CompiledValue::compile_at(scripts, value, extra, String::new())
    }

    fn compile_at(
        scripts: &Scripts,
        value: &Value,
        extra: &[&str],
        path: String,
    ) -> Result<CompiledValue, ValueError> {
        Ok(match value {
            Value::String(text) => {
                let template =
                    Template::compile(scripts, text, extra).map_err(|error| ValueError {
                        path: path.clone(),
                        error,
                    })?;
                if template.is_literal() {
                    CompiledValue::Literal(value.clone())
                } else {
                    CompiledValue::Template(template)
                }
            }
            Value::Array(items) => CompiledValue::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        CompiledValue::compile_at(scripts, v, extra, format!("{path}[{i}]"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => CompiledValue::Map(
                map.iter()
                    .map(|(k, v)| {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        Ok((k.clone(), CompiledValue::compile_at(scripts, v, extra, p)?))
                    })
                    .collect::<Result<_, ValueError>>()?,
            ),
            other => CompiledValue::Literal(other.clone()),
        })
    }

    /// The value when it holds no template (for checks at load time).
    pub fn literal(&self) -> Option<&Value> {
        match self {
            CompiledValue::Literal(v) => Some(v),
            _ => None,
        }
    }

    /// Whether rendering it evaluates only straight-line expressions ([`Expr::is_straight`]).
    pub fn is_straight(&self) -> bool {
        match self {
            CompiledValue::Literal(_) => true,
            CompiledValue::Template(t) => t.is_straight(),
            CompiledValue::List(items) => items.iter().all(CompiledValue::is_straight),
            CompiledValue::Map(map) => map.values().all(CompiledValue::is_straight),
        }
    }

    pub fn render(&self, scripts: &Scripts, ctx: &Context) -> Result<Value, ScriptError> {
        Ok(match self {
            CompiledValue::Literal(v) => v.clone(),
            CompiledValue::Template(t) => t.render(scripts, ctx)?,
            CompiledValue::List(items) => Value::Array(
                items
                    .iter()
                    .map(|v| v.render(scripts, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            CompiledValue::Map(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(scripts, ctx)?)))
                    .collect::<Result<_, ScriptError>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> Context {
        Context {
            alert: json!({"severity": 8, "resource": {"id": "i-0abc", "tags": {"env": "prod"}}}),
            ..Context::default()
        }
    }

    #[test]
    fn one_template_keeps_the_type_and_mixed_text_is_a_string() {
        let s = Scripts::default();
        let t = |text: &str| {
            Template::compile(&s, text, &[])
                .unwrap()
                .render(&s, &ctx())
                .unwrap()
        };
        assert_eq!(t("${{ alert.severity }}"), json!(8));
        assert_eq!(t("${{ alert.resource.tags }}"), json!({"env": "prod"}));
        assert_eq!(
            t("Isolate ${{ alert.resource.id }} (sev ${{ alert.severity }})?"),
            json!("Isolate i-0abc (sev 8)?")
        );
        assert_eq!(t("no templates"), json!("no templates"));
    }

    #[test]
    fn errors_point_into_the_text() {
        let s = Scripts::default();
        let e = Template::compile(&s, "Isolate ${{ alert.resource.id + }}?", &[]).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.column > 12, "{e:?}");
        let e = Template::compile(&s, "line one\nthen ${{ nope.x }}", &[]).unwrap_err();
        assert_eq!((e.line, e.column), (2, 10), "{e:?}");
        let e = Template::compile(&s, "open ${{ alert.id", &[]).unwrap_err();
        assert!(e.message.contains("not closed"));
    }

    #[test]
    fn values_compile_with_paths() {
        let s = Scripts::default();
        let v = CompiledValue::compile(
            &s,
            &json!({"ip": "${{ alert.resource.id }}", "n": [1, "${{ alert.severity }}"]}),
            &[],
        )
        .unwrap();
        assert_eq!(
            v.render(&s, &ctx()).unwrap(),
            json!({"ip": "i-0abc", "n": [1, 8]})
        );
        let e = CompiledValue::compile(&s, &json!({"a": {"b": ["x", "${{ bad bad }}"]}}), &[])
            .unwrap_err();
        assert_eq!(e.path, "a.b[1]");
    }
}
