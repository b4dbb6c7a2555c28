//! TEMPORARY: a minimal loader until `load::load_paths` lands; removed at that merge.

use std::path::{Path, PathBuf};

use super::{Compiled, CompiledStep, StepKind, model};
use crate::config::Diagnostic;
use crate::script::{CompiledValue, Scripts, Template};

fn steps(
    scripts: &Scripts,
    list: &[model::Step],
    extra: &[&str],
) -> Result<Vec<CompiledStep>, String> {
    list.iter()
        .map(|s| {
            let kind = if let Some(uses) = &s.uses {
                StepKind::Action {
                    name: uses.clone(),
                    inputs: s
                        .inputs
                        .iter()
                        .map(|(k, v)| {
                            Ok((
                                k.clone(),
                                CompiledValue::compile(scripts, v, extra)
                                    .map_err(|e| e.error.message)?,
                            ))
                        })
                        .collect::<Result<_, String>>()?,
                }
            } else if let Some(script) = &s.script {
                StepKind::Script(
                    scripts
                        .compile_script(script, extra)
                        .map_err(|e| e.message)?,
                )
            } else if let Some(a) = &s.approval {
                StepKind::Approval {
                    prompt: Template::compile(scripts, &a.prompt, extra).map_err(|e| e.message)?,
                    spec: a.clone(),
                }
            } else if let Some(f) = &s.foreach {
                let mut names = extra.to_vec();
                names.push(&f.name);
                StepKind::Foreach {
                    items: scripts
                        .compile_expr(&f.items, extra)
                        .map_err(|e| e.message)?,
                    name: f.name.clone(),
                    concurrency: f.concurrency,
                    steps: steps(scripts, &f.steps, &names)?,
                }
            } else if let Some(p) = &s.parallel {
                StepKind::Parallel(
                    p.iter()
                        .map(|b| steps(scripts, &b.steps, extra))
                        .collect::<Result<_, _>>()?,
                )
            } else if let Some(c) = &s.call {
                StepKind::Call {
                    playbook: c.playbook.clone(),
                    inputs: c
                        .inputs
                        .iter()
                        .map(|(k, v)| {
                            Ok((
                                k.clone(),
                                CompiledValue::compile(scripts, v, extra)
                                    .map_err(|e| e.error.message)?,
                            ))
                        })
                        .collect::<Result<_, String>>()?,
                }
            } else {
                return Err(format!("step `{}` has nothing to do", s.id));
            };
            Ok(CompiledStep {
                id: s.id.clone(),
                condition: s
                    .condition
                    .as_deref()
                    .map(|c| scripts.compile_expr(c, extra))
                    .transpose()
                    .map_err(|e| e.message)?,
                kind,
                retry: s.retry.clone(),
                timeout: s.timeout.map(|t| t.0),
                on_error: s.on_error,
            })
        })
        .collect()
}

pub fn load_file(path: &Path, scripts: &Scripts) -> Result<Compiled, Vec<Diagnostic>> {
    let fail = |m: String| vec![Diagnostic::new(path, 0, 0, m)];
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let spec: model::Playbook = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    Ok(Compiled {
        when: spec
            .on
            .as_ref()
            .and_then(|o| o.when.as_deref())
            .map(|w| scripts.compile_expr(w, &[]))
            .transpose()
            .map_err(|e| fail(e.message))?,
        concurrency: spec
            .concurrency
            .as_deref()
            .map(|c| scripts.compile_expr(c, &[]))
            .transpose()
            .map_err(|e| fail(e.message))?,
        vars: spec
            .vars
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    CompiledValue::compile(scripts, v, &[]).map_err(|e| e.error.message)?,
                ))
            })
            .collect::<Result<_, String>>()
            .map_err(fail)?,
        outputs: spec
            .outputs
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    CompiledValue::compile(scripts, v, &[]).map_err(|e| e.error.message)?,
                ))
            })
            .collect::<Result<_, String>>()
            .map_err(fail)?,
        steps: steps(scripts, &spec.steps, &[]).map_err(fail)?,
        spec,
        file: path.to_owned(),
    })
}

pub fn load_paths(paths: &[PathBuf], scripts: &Scripts) -> (Vec<Compiled>, Vec<Diagnostic>) {
    let mut out = (Vec::new(), Vec::new());
    for path in paths {
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut f: Vec<PathBuf> = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            f.sort();
            f
        } else {
            vec![path.clone()]
        };
        for file in files {
            match load_file(&file, scripts) {
                Ok(c) => out.0.push(c),
                Err(d) => out.1.extend(d),
            }
        }
    }
    out
}
