//! Checking one playbook and compiling it, with every problem at `file:line:column` and, where one
//! helps, a hint ("did you mean ...?"). [`super::load`] reads the file and runs these checks:
//!
//! - step ids are unique, nested steps included, and each step does exactly one thing;
//! - `uses` names an action of the catalog, `with` gives it known inputs of the right type (templates
//!   are checked when they render) and every required one;
//! - approver groups, trigger sources and test cases name things that exist;
//! - every Rhai part (`on.when`, `concurrency`, `if`, `script`, `foreach.items`, the `${{ }}`
//!   templates of `with`, `vars`, `outputs`, `call.inputs` and approval prompts) is compiled once; a
//!   syntax error or an undefined variable is mapped from the Rhai text into the file, inside a
//!   `script: |` block too, and each `steps.<id>` it reads ([`super::rhai_scan`]) must be a step
//!   that has finished by then;
//! - every Rhai part is also checked for what it reads and calls ([`Checker::types`]): each field
//!   of `alert` and `incident` against their shapes, operators against their operands' types
//!   (`alert.severity >= 7` compares a map with a number), the functions called, and conditions
//!   and templates evaluated on a sample alert of each source listened to ([`super::samples`]);
//! - test cases name steps of the right kinds, and canned results and expectations are sound;
//! - across files, a `call` names a playbook that is there and gives it the inputs it takes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::Path;

use serde_json::Value;

use super::model::{
    ApprovalSpec, Branch, Call, Foreach, Playbook, Step, TEST_STATUSES, TestCase, Trigger,
};
use super::position::{self, Node, Pos};
use super::rhai_scan::{step_reads, template_exprs};
use super::samples;
use super::{Compiled, CompiledStep, StepKind};
use crate::actions::{Catalog, InputType};
use crate::config::{Diagnostic, HumanDuration};
use crate::intake::formats::SourceKind;
use crate::script::analysis::Want;
use crate::script::{CompiledValue, Context, Expr, NAMES, ScriptError, Scripts, Template};

/// What may be read at one place of a playbook.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// `foreach` item names in effect.
    extra: Vec<String>,
    /// Step ids whose results exist here.
    visible: BTreeSet<String>,
    /// The steps this place is nested in (a `foreach` or `parallel` has no result until its
    /// nested steps are done).
    enclosing: Vec<String>,
    /// The step reading; `None` before any step runs (`on.when`, `vars`, ...) and in `outputs`.
    reader: Option<String>,
}

impl Scope {
    fn extra(&self) -> Vec<&str> {
        self.extra.iter().map(String::as_str).collect()
    }
}

/// The kinds a step may be, in the order they are named in messages.
const KINDS: [&str; 6] = ["uses", "script", "approval", "foreach", "parallel", "call"];

fn kinds(step: &Step) -> Vec<&'static str> {
    [
        step.uses.is_some(),
        step.script.is_some(),
        step.approval.is_some(),
        step.foreach.is_some(),
        step.parallel.is_some(),
        step.call.is_some(),
    ]
    .into_iter()
    .zip(KINDS)
    .filter_map(|(present, kind)| present.then_some(kind))
    .collect()
}

/// What a piece of Rhai is, for its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rhai {
    /// `on.when`, `if`: true or false.
    Condition,
    /// `foreach.items`: a list.
    Items,
    /// `concurrency`: any value.
    Value,
    /// A `script:` step's statements.
    Script,
}

/// One file's checks and compilation.
pub(super) struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    scripts: &'a Scripts,
    catalog: &'a dyn Catalog,
    groups: Option<&'a [String]>,
    /// Every step id in document order, with its kind (the first, if it names several).
    ids: Vec<(String, Option<&'static str>)>,
    /// A step id's place in `ids`.
    order: HashMap<String, usize>,
    diagnostics: Vec<Diagnostic>,
    calls: Vec<CallSite>,
    /// What expressions are evaluated on: per source the playbook listens to that has a sample,
    /// its sample alert and incident (and, once known, `vars` rendered on them).
    contexts: Vec<(&'static str, Context)>,
}

impl<'a> Checker<'a> {
    /// A checker of the playbook in `text`, read from `file`. `groups` are the approver groups of
    /// the config (`None`: not checked).
    pub(super) fn new(
        text: &'a str,
        file: &'a Path,
        scripts: &'a Scripts,
        catalog: &'a dyn Catalog,
        groups: Option<&'a [String]>,
    ) -> Self {
        Checker {
            text,
            file,
            scripts,
            catalog,
            groups,
            ids: Vec::new(),
            order: HashMap::new(),
            diagnostics: Vec::new(),
            calls: Vec::new(),
            contexts: Vec::new(),
        }
    }

    /// Checks and compiles `spec`, whose position index is `root`. Returns the compiled playbook
    /// with its `call` steps (for [`check_call`]), or every problem found.
    pub(super) fn check(
        mut self,
        spec: Playbook,
        root: &Node,
    ) -> Result<(Compiled, Vec<CallSite>), Vec<Diagnostic>> {
        match self.playbook(spec, root) {
            Some(compiled) if self.diagnostics.is_empty() => Ok((compiled, self.calls)),
            _ => {
                let mut diagnostics = self.diagnostics;
                diagnostics.dedup();
                Err(diagnostics)
            }
        }
    }

    fn report(&mut self, at: Pos, message: impl Into<String>, hint: Option<String>) {
        let mut found = Diagnostic::new(self.file, at.line, at.column, message);
        found.hint = hint;
        self.diagnostics.push(found);
    }

    fn playbook(&mut self, spec: Playbook, root: &Node) -> Option<Compiled> {
        let at = |key: &str| root.get(key).unwrap_or(root);
        if spec.id.trim().is_empty() {
            self.report(at("id").pos(), "the playbook id is empty", None);
        }
        self.collect_ids(&spec.steps, root.get("steps"), root);
        for (name, input) in &spec.inputs {
            const TYPES: [&str; 6] = ["string", "number", "bool", "list", "map", "any"];
            if !TYPES.contains(&input.kind.as_str()) {
                let node = at("inputs").get(name).and_then(|i| i.get("type"));
                self.report(
                    node.unwrap_or(at("inputs")).pos(),
                    format!("input `{name}` has an unknown type `{}`", input.kind),
                    Some(format!("types are {}", list(TYPES))),
                );
            }
        }

        self.contexts = sample_contexts(&spec);
        let start = Scope::default();
        let when = spec
            .on
            .as_ref()
            .and_then(|on| self.trigger(on, at("on"), &start));
        let concurrency = spec
            .concurrency
            .as_ref()
            .map(|c| self.rhai(c, at("concurrency"), "`concurrency`", &start, Rhai::Value));
        let vars = self.values(&spec.vars, at("vars"), "vars", "", &start);
        if let Some(vars) = &vars {
            for (_, ctx) in &mut self.contexts {
                let rendered: serde_json::Map<String, Value> = vars
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.render(self.scripts, ctx).unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                ctx.vars = Value::Object(rendered);
            }
        }

        if spec.steps.is_empty() {
            let key = root.key("steps").unwrap_or(root);
            self.report(key.pos(), "the playbook has no steps", None);
        }
        let mut scope = Scope::default();
        let steps = self.steps(&spec.steps, root.get("steps"), root, &mut scope);

        let end = Scope {
            visible: self.ids.iter().map(|(id, _)| id.clone()).collect(),
            ..Scope::default()
        };
        let outputs = self.values(&spec.outputs, at("outputs"), "outputs", "", &end);
        let tests = root.get("tests");
        for (i, test) in spec.tests.iter().enumerate() {
            self.test(test, tests.and_then(|t| t.at(i)).unwrap_or(root));
        }

        let when = when.map(|w| w.ok_or(())).transpose().ok()?;
        let concurrency = concurrency.map(|c| c.ok_or(())).transpose().ok()?;
        Some(Compiled {
            file: self.file.to_owned(),
            when,
            concurrency,
            vars: vars?,
            steps: steps?,
            outputs: outputs?,
            spec,
        })
    }

    /// Records every step id in document order; a repeated one is an error at its `id`.
    fn collect_ids(&mut self, steps: &[Step], list: Option<&Node>, parent: &Node) {
        for (i, step) in steps.iter().enumerate() {
            let node = list.and_then(|l| l.at(i)).unwrap_or(parent);
            let id_node = node.get("id").unwrap_or(node);
            if step.id.trim().is_empty() {
                self.report(id_node.pos(), "a step id is empty", None);
            } else if self.order.contains_key(&step.id) {
                self.report(
                    id_node.pos(),
                    format!("duplicate step id `{}`", step.id),
                    Some("step ids are unique within a playbook, nested steps included".into()),
                );
            } else {
                self.order.insert(step.id.clone(), self.ids.len());
                self.ids
                    .push((step.id.clone(), kinds(step).first().copied()));
            }
            if let Some(foreach) = &step.foreach {
                let at = node.get("foreach").unwrap_or(node);
                self.collect_ids(&foreach.steps, at.get("steps"), at);
            }
            if let Some(branches) = &step.parallel {
                let at = node.get("parallel");
                for (b, branch) in branches.iter().enumerate() {
                    let at = at.and_then(|p| p.at(b)).unwrap_or(node);
                    self.collect_ids(&branch.steps, at.get("steps"), at);
                }
            }
        }
    }

    fn trigger(&mut self, on: &Trigger, node: &Node, scope: &Scope) -> Option<Option<Expr>> {
        let source = node.get("source");
        if on.source.is_empty() {
            self.report(
                source.unwrap_or(node).pos(),
                "`on.source` names no source",
                None,
            );
        }
        for (i, name) in on.source.iter().enumerate() {
            let at = source.and_then(|s| s.at(i)).or(source).unwrap_or(node);
            self.source(name, at);
        }
        self.states(on, node);
        let at = node.get("when").unwrap_or(node);
        on.when
            .as_ref()
            .map(|when| self.rhai(when, at, "`on.when`", scope, Rhai::Condition))
    }

    /// A state in `on.state` that none of the trigger's sources ever sends would never start the
    /// playbook: Falco alerts never resolve, GuardDuty findings are archived, not resolved.
    fn states(&mut self, on: &Trigger, node: &Node) {
        let Some(states) = &on.state else { return };
        let sources: Vec<SourceKind> = on
            .source
            .iter()
            .filter_map(|s| SourceKind::from_name(s))
            .collect();
        if sources.is_empty() {
            return;
        }
        let list_node = node.get("state");
        for (i, state) in states.iter().enumerate() {
            if sources.iter().any(|s| s.states().contains(state)) {
                continue;
            }
            let at = list_node
                .and_then(|l| l.at(i))
                .or(list_node)
                .unwrap_or(node);
            let says: Vec<String> = sources
                .iter()
                .map(|s| {
                    let names: Vec<&str> = s.states().iter().map(|s| s.name()).collect();
                    format!("`{s}`: {}", names.join(", "))
                })
                .collect();
            self.report(
                at.pos(),
                format!("no source of this playbook sends alerts in state `{state}`"),
                Some(format!(
                    "the states each source sends are {}",
                    says.join("; ")
                )),
            );
        }
    }

    fn source(&mut self, name: &str, at: &Node) {
        if SourceKind::from_name(name).is_none() {
            let known = SourceKind::ALL.map(SourceKind::name);
            let hint =
                did_you_mean(name, known).unwrap_or_else(|| format!("sources are {}", list(known)));
            self.report(at.pos(), format!("unknown source `{name}`"), Some(hint));
        }
    }

    fn steps(
        &mut self,
        steps: &[Step],
        list: Option<&Node>,
        parent: &Node,
        scope: &mut Scope,
    ) -> Option<Vec<CompiledStep>> {
        let mut out = Some(Vec::with_capacity(steps.len()));
        for (i, step) in steps.iter().enumerate() {
            let node = list.and_then(|l| l.at(i)).unwrap_or(parent);
            let compiled = self.step(step, node, scope);
            scope.visible.insert(step.id.clone());
            match (&mut out, compiled) {
                (Some(done), Some(step)) => done.push(step),
                _ => out = None,
            }
        }
        out
    }

    fn step(&mut self, step: &Step, node: &Node, outer: &mut Scope) -> Option<CompiledStep> {
        let id = &step.id;
        let at = |key: &str| node.get(key).unwrap_or(node);
        let owner = format!(" of step `{id}`");
        let scope = Scope {
            reader: Some(id.clone()),
            ..outer.clone()
        };

        let kinds = kinds(step);
        match kinds.as_slice() {
            [_] => {}
            [] => self.report(
                node.pos(),
                format!("step `{id}` does nothing"),
                Some(format!("give it one of {}", list(KINDS))),
            ),
            several => self.report(
                node.pos(),
                format!(
                    "step `{id}` has {}; a step does one thing",
                    list(several.iter().copied())
                ),
                Some("split it into several steps".into()),
            ),
        }

        let condition = step.condition.as_ref().map(|c| {
            self.rhai(
                c,
                at("if"),
                &format!("`if`{owner}"),
                &scope,
                Rhai::Condition,
            )
        });
        if step.uses.is_none() && !step.inputs.is_empty() {
            self.report(
                node.key("with").unwrap_or(node).pos(),
                format!("step `{id}` has `with` but no `uses`"),
                Some("`with` gives an action its inputs; a `call` step takes `call.inputs`".into()),
            );
        }
        let action = step
            .uses
            .as_ref()
            .map(|name| self.action(step, name, node, &owner, &scope));
        let script = step.script.as_ref().map(|s| {
            self.rhai(
                s,
                at("script"),
                &format!("`script`{owner}"),
                &scope,
                Rhai::Script,
            )
        });
        let approval = step
            .approval
            .as_ref()
            .map(|a| self.approval(a, at("approval"), &owner, &scope));
        let foreach = step
            .foreach
            .as_ref()
            .map(|f| self.foreach(id, f, at("foreach"), &owner, &scope, outer));
        let parallel = step
            .parallel
            .as_ref()
            .map(|branches| self.parallel(id, branches, node, &scope, outer));
        let call = step
            .call
            .as_ref()
            .map(|call| self.call(id, call, at("call"), &owner, &scope));
        // Only actions and scripts have attempts: a container's steps retry on their own.
        let container = if step.foreach.is_some() || step.parallel.is_some() {
            Some("put `retry` on the steps inside, which retry each on its own")
        } else if step.call.is_some() {
            Some("put `retry` on the called playbook's steps, which retry each on its own")
        } else if step.approval.is_some() {
            Some("an approval is asked once; its `timeout` and `on_timeout` say what happens then")
        } else {
            None
        };
        if step.retry.is_some()
            && let Some(hint) = container
        {
            self.report(
                at("retry").pos(),
                format!("`retry` has no effect on step `{id}`, which has no attempts of its own"),
                Some(hint.into()),
            );
        }
        if let Some(retry) = &step.retry
            && retry.attempts == 0
        {
            let retry_node = at("retry");
            self.report(
                retry_node.get("attempts").unwrap_or(retry_node).pos(),
                "`retry.attempts` counts the first attempt too, so it is at least 1",
                None,
            );
        }

        let condition = condition.map(|c| c.ok_or(())).transpose().ok()?;
        let kind = if kinds.len() != 1 {
            None
        } else if let (Some(inputs), Some(name)) = (action, &step.uses) {
            inputs.map(|inputs| StepKind::Action {
                name: name.clone(),
                inputs,
            })
        } else if let Some(script) = script {
            script.map(StepKind::Script)
        } else if let (Some(prompt), Some(spec)) = (approval, &step.approval) {
            prompt.map(|prompt| StepKind::Approval {
                prompt,
                spec: spec.clone(),
            })
        } else if let (Some((items, steps)), Some(f)) = (foreach, &step.foreach) {
            Some(StepKind::Foreach {
                items: items?,
                name: f.name.clone(),
                concurrency: f.concurrency,
                steps: steps?,
            })
        } else if let Some(branches) = parallel {
            branches.map(StepKind::Parallel)
        } else if let (Some(inputs), Some(call)) = (call, &step.call) {
            inputs.map(|inputs| StepKind::Call {
                playbook: call.playbook.clone(),
                inputs,
            })
        } else {
            None
        }?;
        Some(CompiledStep {
            id: id.clone(),
            condition,
            kind,
            retry: step.retry.clone(),
            timeout: step.timeout.map(|t| t.0),
            on_error: step.on_error,
        })
    }

    /// A `parallel` step's branches. Each sees what ran before the `parallel` step, not its
    /// siblings; all their step ids become readable after it, in `outer`.
    fn parallel(
        &mut self,
        id: &str,
        branches: &[Branch],
        node: &Node,
        scope: &Scope,
        outer: &mut Scope,
    ) -> Option<Vec<Vec<CompiledStep>>> {
        let list = node.get("parallel");
        if branches.is_empty() {
            self.report(
                list.unwrap_or(node).pos(),
                format!("step `{id}` has no branches"),
                None,
            );
        }
        let mut all = Some(Vec::with_capacity(branches.len()));
        let mut ran = BTreeSet::new();
        for (b, branch) in branches.iter().enumerate() {
            let at = list.and_then(|p| p.at(b)).unwrap_or(node);
            if branch.steps.is_empty() {
                self.report(
                    at.pos(),
                    format!("a branch of step `{id}` has no steps"),
                    None,
                );
            }
            let mut inner = Scope {
                enclosing: [scope.enclosing.clone(), vec![id.to_owned()]].concat(),
                ..scope.clone()
            };
            let steps = self.steps(&branch.steps, at.get("steps"), at, &mut inner);
            ran.extend(inner.visible);
            match (&mut all, steps) {
                (Some(done), Some(steps)) => done.push(steps),
                _ => all = None,
            }
        }
        outer.visible.extend(ran);
        all
    }

    /// A `call` step's inputs; the call is recorded for the checks against the called playbook
    /// ([`check_call`]).
    fn call(
        &mut self,
        id: &str,
        call: &Call,
        node: &Node,
        owner: &str,
        scope: &Scope,
    ) -> Option<BTreeMap<String, CompiledValue>> {
        let target = node.get("playbook").unwrap_or(node);
        if call.playbook.trim().is_empty() {
            self.report(target.pos(), format!("step `{id}` calls no playbook"), None);
        }
        let inputs = node.get("inputs");
        self.calls.push(CallSite {
            playbook: call.playbook.clone(),
            at: target.pos(),
            inputs: call
                .inputs
                .keys()
                .map(|k| {
                    let key = inputs.and_then(|n| n.key(k)).unwrap_or(node);
                    (k.clone(), key.pos())
                })
                .collect(),
            inputs_at: node.key("inputs").unwrap_or(node).pos(),
        });
        self.values(
            &call.inputs,
            inputs.unwrap_or(node),
            "call.inputs",
            owner,
            scope,
        )
    }

    /// A `uses` step: the action exists, and its inputs are known, of the right type and complete.
    fn action(
        &mut self,
        step: &Step,
        name: &str,
        node: &Node,
        owner: &str,
        scope: &Scope,
    ) -> Option<BTreeMap<String, CompiledValue>> {
        let with = node.get("with");
        let inputs = self.values(&step.inputs, with.unwrap_or(node), "with", owner, scope);
        let uses_at = node.get("uses").unwrap_or(node).pos();
        let catalog = self.catalog;
        let Some(spec) = catalog.action(name) else {
            let names = catalog.names();
            let hint = did_you_mean(name, names.iter().map(String::as_str));
            self.report(uses_at, format!("unknown action `{name}`"), hint);
            return inputs;
        };
        for (key, value) in &step.inputs {
            let key_at = with.and_then(|w| w.key(key)).unwrap_or(node).pos();
            let Some(input) = spec.inputs.get(key) else {
                let hint =
                    did_you_mean(key, spec.inputs.keys().map(String::as_str)).or_else(|| {
                        Some(if spec.inputs.is_empty() {
                            "it takes no inputs".to_owned()
                        } else {
                            format!(
                                "its inputs are {}",
                                list(spec.inputs.keys().map(String::as_str))
                            )
                        })
                    });
                self.report(key_at, format!("`{name}` has no input `{key}`"), hint);
                continue;
            };
            let is_template = matches!(value, Value::String(s) if s.contains("${{"));
            if !is_template
                && input.kind.accepts(value)
                && let Some(misfit) = input.misfit(value)
            {
                let value_at = with.and_then(|w| w.get(key)).unwrap_or(node).pos();
                self.report(
                    value_at,
                    format!("input `{key}` of `{name}` {misfit}"),
                    described(key, &input.description),
                );
            }
            if !is_template && !input.kind.accepts(value) {
                let value_at = with.and_then(|w| w.get(key)).unwrap_or(node).pos();
                self.report(
                    value_at,
                    format!(
                        "input `{key}` of `{name}` is {}, but it takes {}",
                        a_json_type(value),
                        an_input_type(input.kind)
                    ),
                    described(key, &input.description),
                );
            }
        }
        for (key, input) in &spec.inputs {
            if input.required && !step.inputs.contains_key(key) {
                let at = node.key("with").map(Node::pos).unwrap_or(uses_at);
                self.report(
                    at,
                    format!("`{name}` needs input `{key}`"),
                    described(key, &input.description),
                );
            }
        }
        inputs
    }

    fn approval(
        &mut self,
        approval: &ApprovalSpec,
        node: &Node,
        owner: &str,
        scope: &Scope,
    ) -> Option<Template> {
        let prompt = self.template(
            &approval.prompt,
            node.get("prompt").unwrap_or(node),
            &format!("`approval.prompt`{owner}"),
            scope,
        );
        // `None`: no config at hand (a playbook author's checkout), so groups are not checked.
        if let Some(known) = self.groups
            && !known.contains(&approval.approvers)
        {
            let groups = known.iter().map(String::as_str);
            let hint = did_you_mean(&approval.approvers, groups.clone()).unwrap_or_else(|| {
                if known.is_empty() {
                    "the config defines no approver groups".to_owned()
                } else {
                    format!("the config's approver groups are {}", list(groups))
                }
            });
            self.report(
                node.get("approvers").unwrap_or(node).pos(),
                format!("unknown approver group `{}`", approval.approvers),
                Some(hint),
            );
        }
        if approval.quorum == 0 {
            self.report(
                node.get("quorum").unwrap_or(node).pos(),
                "`quorum` is at least 1",
                None,
            );
        }
        prompt
    }

    /// A `foreach` step: its items, and its nested steps with the item's name readable. The
    /// nested steps' ids become readable after it, in `outer`.
    fn foreach(
        &mut self,
        id: &str,
        foreach: &Foreach,
        node: &Node,
        owner: &str,
        scope: &Scope,
        outer: &mut Scope,
    ) -> (Option<Expr>, Option<Vec<CompiledStep>>) {
        let items = self.rhai(
            &foreach.items,
            node.get("items").unwrap_or(node),
            &format!("`foreach.items`{owner}"),
            scope,
            Rhai::Items,
        );
        let name = &foreach.name;
        let name_at = node.get("as").unwrap_or(node).pos();
        let identifier = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            self.report(
                name_at,
                format!("`foreach.as` `{name}` is not a name Rhai can read"),
                Some("use letters, digits and `_`, starting with a letter".into()),
            );
        } else if NAMES.contains(&name.as_str()) || scope.extra.contains(name) {
            self.report(
                name_at,
                format!("`foreach.as` `{name}` would hide the `{name}` already readable here"),
                Some("pick another name".into()),
            );
        }
        if foreach.concurrency == 0 {
            self.report(
                node.get("concurrency").unwrap_or(node).pos(),
                "`foreach.concurrency` is at least 1",
                None,
            );
        }
        if foreach.steps.is_empty() {
            self.report(
                node.pos(),
                format!("the `foreach` of step `{id}` has no steps"),
                None,
            );
        }
        let mut inner = Scope {
            extra: [scope.extra.clone(), vec![name.clone()]].concat(),
            enclosing: [scope.enclosing.clone(), vec![id.to_owned()]].concat(),
            ..scope.clone()
        };
        let steps = self.steps(&foreach.steps, node.get("steps"), node, &mut inner);
        outer.visible.extend(inner.visible);
        (items, steps)
    }

    /// A test case names steps, sources and decisions that exist.
    fn test(&mut self, test: &TestCase, node: &Node) {
        if let Some(source) = &test.source {
            self.source(source, node.get("source").unwrap_or(node));
        }
        let approvals = node.get("approvals");
        for (id, decision) in &test.approvals {
            let at = approvals.and_then(|a| a.key(id)).unwrap_or(node).pos();
            self.step_of_kind(id, "approval", "an approval step", at);
            if !["approve", "deny", "timeout"].contains(&decision.as_str()) {
                let at = approvals.and_then(|a| a.get(id)).unwrap_or(node).pos();
                self.report(
                    at,
                    format!("unknown decision `{decision}`"),
                    Some("decisions are `approve`, `deny` and `timeout`".into()),
                );
            }
        }
        let actions = node.get("actions");
        for (id, results) in &test.actions {
            let at = actions.and_then(|a| a.key(id)).unwrap_or(node).pos();
            self.step_of_kind(id, "uses", "an action step", at);
            let value = actions.and_then(|a| a.get(id)).unwrap_or(node);
            if results.0.is_empty() {
                self.report(value.pos(), format!("no canned result for `{id}`"), None);
            }
            let one = results.0.len() == 1 && !matches!(value.kind, position::Kind::Seq(_));
            for (i, result) in results.0.iter().enumerate() {
                let at = if one {
                    value
                } else {
                    value.at(i).unwrap_or(value)
                };
                if result.output.is_some() && result.error.is_some() {
                    self.report(
                        at.pos(),
                        "a canned result has both `output` and `error`",
                        Some("give one: the action either succeeded or failed".into()),
                    );
                }
                if result.retryable && result.error.is_none() {
                    self.report(
                        at.key("retryable").unwrap_or(at).pos(),
                        "`retryable` says how an `error` fails, but this result has no `error`",
                        None,
                    );
                }
            }
        }
        let expect = node.get("expect").unwrap_or(node);
        const STATUSES: [&str; 6] = TEST_STATUSES;
        for (key, ids, kind) in [
            (
                "inputs",
                test.expect.inputs.keys().collect::<Vec<_>>(),
                true,
            ),
            (
                "inputs_exact",
                test.expect.inputs_exact.keys().collect(),
                true,
            ),
            ("attempts", test.expect.attempts.keys().collect(), false),
        ] {
            let map = expect.get(key);
            for id in ids {
                let at = map.and_then(|m| m.key(id)).unwrap_or(expect).pos();
                if kind {
                    self.step_of_kind(id, "uses", "an action step", at);
                } else if !self.order.contains_key(id.as_str()) {
                    let hint = did_you_mean(id, self.ids.iter().map(|(id, _)| id.as_str()));
                    self.report(at, format!("no step `{id}`"), hint);
                }
            }
        }
        for (key, inputs) in [
            ("inputs", &test.expect.inputs),
            ("inputs_exact", &test.expect.inputs_exact),
        ] {
            for (id, want) in inputs {
                let fits = match want {
                    Value::Object(_) => true,
                    Value::Array(calls) => calls.iter().all(Value::is_object),
                    _ => false,
                };
                if !fits {
                    let at = expect.get(key).and_then(|m| m.get(id)).unwrap_or(expect);
                    self.report(
                        at.pos(),
                        format!("`expect.{key}.{id}` is {}", a_json_type(want)),
                        Some("give the inputs as a map, or a list of maps (one per call)".into()),
                    );
                }
            }
        }
        if !STATUSES.contains(&test.expect.status.as_str()) {
            let status = &test.expect.status;
            self.report(
                expect.get("status").unwrap_or(expect).pos(),
                format!("unknown status `{status}`"),
                Some(
                    did_you_mean(status, STATUSES)
                        .unwrap_or_else(|| format!("statuses are {}", list(STATUSES))),
                ),
            );
        }
        for (key, ids) in [
            ("steps", &test.expect.steps),
            ("skipped", &test.expect.skipped),
        ] {
            for (i, id) in ids.iter().flatten().enumerate() {
                if !self.order.contains_key(id) {
                    let at = expect
                        .get(key)
                        .and_then(|l| l.at(i))
                        .unwrap_or(expect)
                        .pos();
                    let hint = did_you_mean(id, self.ids.iter().map(|(id, _)| id.as_str()));
                    self.report(at, format!("no step `{id}`"), hint);
                }
            }
        }
    }

    fn step_of_kind(&mut self, id: &str, kind: &str, described: &str, at: Pos) {
        match self.order.get(id).map(|&i| self.ids[i].1) {
            Some(Some(k)) if k == kind => {}
            Some(_) => self.report(at, format!("step `{id}` is not {described}"), None),
            None => {
                let hint = did_you_mean(
                    id,
                    self.ids
                        .iter()
                        .filter(|(_, k)| *k == Some(kind))
                        .map(|(id, _)| id.as_str()),
                );
                self.report(at, format!("no step `{id}`"), hint);
            }
        }
    }

    /// Compiles a Rhai expression (or a script's statements), checks the steps it reads, and checks
    /// its types ([`Checker::types`]). `what` names the place in messages.
    fn rhai(
        &mut self,
        source: &str,
        node: &Node,
        what: &str,
        scope: &Scope,
        kind: Rhai,
    ) -> Option<Expr> {
        let extra = scope.extra();
        let compiled = if kind == Rhai::Script {
            self.scripts.compile_script(source, &extra)
        } else {
            self.scripts.compile_expr(source, &extra)
        };
        match compiled {
            Ok(expr) => {
                self.reads(source, std::iter::once(0..source.len()), node, what, scope);
                let want = match kind {
                    Rhai::Condition => Want::Bool,
                    Rhai::Items => Want::List,
                    Rhai::Value | Rhai::Script => Want::Any,
                };
                // Scripts are checked but not run: they may loop, and the checks cannot know what
                // the steps before them gave.
                self.types(
                    &expr,
                    node,
                    what,
                    scope,
                    want,
                    kind != Rhai::Script,
                    |l, c| (l, c),
                );
                Some(expr)
            }
            Err(e) => {
                self.script_error(&e, node, what, scope);
                None
            }
        }
    }

    /// Compiles a `${{ }}` template and checks the steps its expressions read and their types.
    fn template(&mut self, text: &str, node: &Node, what: &str, scope: &Scope) -> Option<Template> {
        match Template::compile(self.scripts, text, &scope.extra()) {
            Ok(template) => {
                self.reads(text, template_exprs(text), node, what, scope);
                for (offset, expr) in template.exprs() {
                    // A place in the expression is a place in the template's text.
                    let place = |line, column| {
                        line_col(text, offset + byte_offset(&expr.source, line, column))
                    };
                    self.types(expr, node, what, scope, Want::Any, true, place);
                }
                Some(template)
            }
            Err(e) => {
                self.script_error(&e, node, what, scope);
                None
            }
        }
    }

    /// Compiles a map of values (`with`, `vars`, `outputs`, `call.inputs`) whose strings may be
    /// templates, reporting every bad one. `path` and `owner` name them: `with.ip` of step `x`.
    fn values(
        &mut self,
        values: &BTreeMap<String, Value>,
        node: &Node,
        path: &str,
        owner: &str,
        scope: &Scope,
    ) -> Option<BTreeMap<String, CompiledValue>> {
        let mut out = Some(BTreeMap::new());
        for (key, value) in values {
            let at = node.get(key).unwrap_or(node);
            let compiled = self.value(value, at, &format!("{path}.{key}"), owner, scope);
            match (&mut out, compiled) {
                (Some(done), Some(value)) => {
                    done.insert(key.clone(), value);
                }
                _ => out = None,
            }
        }
        out
    }

    /// [`CompiledValue::compile`], walked here so that every bad template is reported, each at its
    /// own node.
    fn value(
        &mut self,
        value: &Value,
        node: &Node,
        path: &str,
        owner: &str,
        scope: &Scope,
    ) -> Option<CompiledValue> {
        match value {
            Value::String(text) => {
                let template = self.template(text, node, &format!("`{path}`{owner}"), scope)?;
                Some(if template.is_literal() {
                    CompiledValue::Literal(value.clone())
                } else {
                    CompiledValue::Template(template)
                })
            }
            Value::Array(items) => {
                let mut out = Some(Vec::with_capacity(items.len()));
                for (i, item) in items.iter().enumerate() {
                    let at = node.at(i).unwrap_or(node);
                    let compiled = self.value(item, at, &format!("{path}[{i}]"), owner, scope);
                    match (&mut out, compiled) {
                        (Some(done), Some(item)) => done.push(item),
                        _ => out = None,
                    }
                }
                out.map(CompiledValue::List)
            }
            Value::Object(map) => {
                let map: BTreeMap<String, Value> =
                    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                self.values(&map, node, path, owner, scope)
                    .map(CompiledValue::Map)
            }
            other => Some(CompiledValue::Literal(other.clone())),
        }
    }

    /// The checks of the types `expr` reads and combines: statically (every field read from
    /// `alert` and `incident` against their shapes, operators whose operands' types are known,
    /// the functions called), then, when `evaluate` and nothing was found, by evaluating it on the
    /// sample alert of each source the playbook listens to ([`super::samples`]). `place` maps a
    /// place in `expr`'s text to one in the scalar's text.
    #[allow(clippy::too_many_arguments)]
    fn types(
        &mut self,
        expr: &Expr,
        node: &Node,
        what: &str,
        scope: &Scope,
        want: Want,
        evaluate: bool,
        place: impl Fn(usize, usize) -> (usize, usize),
    ) {
        let found = self.scripts.check(expr, samples::roots(), want);
        let clean = found.is_empty();
        for finding in found {
            let (line, column) = place(finding.line, finding.column);
            let at = node.locate(self.text, line, column);
            self.report(at, format!("{what}: {}", finding.message), finding.hint);
        }
        if !clean || !evaluate {
            return;
        }
        let extra = scope.extra();
        let failed = self.contexts.iter().find_map(|(source, ctx)| {
            let error = self.scripts.type_error(expr, ctx, &extra, want)?;
            Some((*source, error))
        });
        if let Some((source, error)) = failed {
            let (line, column) = place(error.line, error.column);
            let at = node.locate(self.text, line, column);
            self.report(
                at,
                format!("{what}: {}", error.message),
                Some(format!(
                    "found by evaluating it on the sample `{source}` alert (docs/playbooks.md, \"Validation\")"
                )),
            );
        }
    }

    fn script_error(&mut self, error: &ScriptError, node: &Node, what: &str, scope: &Scope) {
        let at = node.locate(self.text, error.line, error.column);
        let undefined = error.message.contains("Undefined variable")
            || error.message.contains("Variable not found");
        let hint = undefined.then(|| {
            let names = NAMES
                .iter()
                .copied()
                .chain(scope.extra.iter().map(String::as_str));
            format!("expressions here can read {}", list(names))
        });
        self.report(at, format!("{what}: {}", error.message), hint);
    }

    /// Checks each `steps.<id>` read in the `ranges` of `text` (Rhai code) against what has run.
    fn reads(
        &mut self,
        text: &str,
        ranges: impl IntoIterator<Item = Range<usize>>,
        node: &Node,
        what: &str,
        scope: &Scope,
    ) {
        for range in ranges {
            for (offset, id) in step_reads(&text[range.clone()]) {
                if let Some((message, hint)) = self.unreadable(&id, what, scope) {
                    let (line, column) = line_col(text, range.start + offset);
                    self.report(node.locate(self.text, line, column), message, hint);
                }
            }
        }
    }

    /// Why `steps.<id>` cannot be read here, if it cannot.
    fn unreadable(&self, id: &str, what: &str, scope: &Scope) -> Option<(String, Option<String>)> {
        if scope.visible.contains(id) {
            return None;
        }
        let Some(&at) = self.order.get(id) else {
            let hint = did_you_mean(id, self.ids.iter().map(|(id, _)| id.as_str()));
            return Some((
                format!("{what} reads `steps.{id}`, but there is no step `{id}`"),
                hint,
            ));
        };
        let earlier = "a step can read only the steps before it";
        Some(match &scope.reader {
            None => (
                format!("{what} is evaluated before any step runs, so it cannot read `steps.{id}`"),
                None,
            ),
            Some(reader) if reader == id => (
                format!("{what} reads `steps.{id}`, the step's own result"),
                Some(earlier.into()),
            ),
            Some(_) if scope.enclosing.iter().any(|e| e == id) => (
                format!(
                    "{what} reads `steps.{id}`, the step it is nested in, which has no result until its nested steps are done"
                ),
                None,
            ),
            Some(reader) if self.order.get(reader).is_some_and(|&r| at < r) => (
                format!(
                    "{what} reads `steps.{id}`, which runs in another branch of the same `parallel` step"
                ),
                Some(
                    "branches run side by side; read it in a step after the `parallel` step".into(),
                ),
            ),
            Some(_) => (
                format!("{what} reads `steps.{id}`, a step that runs later"),
                Some(earlier.into()),
            ),
        })
    }
}

/// The contexts of [`Checker::types`]'s evaluations: each source `spec` listens to that has a
/// sample, with `steps` empty (what a step gives is not known before it runs: reading it gives
/// `()`, whose errors are not reported) and `inputs` at their defaults.
fn sample_contexts(spec: &Playbook) -> Vec<(&'static str, Context)> {
    let inputs: serde_json::Map<String, Value> = spec
        .inputs
        .iter()
        .filter_map(|(name, input)| Some((name.clone(), input.default.clone()?)))
        .collect();
    let mut contexts: Vec<(&'static str, Context)> = Vec::new();
    for source in spec.on.iter().flat_map(|on| &on.source) {
        let Some(kind) = SourceKind::from_name(source) else {
            continue;
        };
        if contexts.iter().any(|(s, _)| *s == kind.name()) {
            continue;
        }
        if let Some(sample) = samples::sample(kind.name()) {
            contexts.push((
                kind.name(),
                Context {
                    alert: sample.alert.clone(),
                    incident: sample.incident.clone(),
                    steps: Value::Object(serde_json::Map::new()),
                    vars: Value::Null,
                    inputs: Value::Object(inputs.clone()),
                    item: None,
                },
            ));
        }
    }
    contexts
}

/// A `call` step, for the checks against the called playbook.
pub(super) struct CallSite {
    playbook: String,
    at: Pos,
    inputs: Vec<(String, Pos)>,
    inputs_at: Pos,
}

/// Checks a `call` against the called playbook, among the `playbooks` that loaded: it exists, and
/// takes the inputs given. A playbook of `failed_ids` did not load; calling it is not reported again.
pub(super) fn check_call(
    call: &CallSite,
    file: &Path,
    playbooks: &[&Compiled],
    failed_ids: &BTreeSet<String>,
    out: &mut Vec<Diagnostic>,
) {
    let Some(target) = playbooks.iter().find(|p| p.id() == call.playbook) else {
        if !failed_ids.contains(&call.playbook) {
            let ids = playbooks.iter().map(|p| p.id());
            let mut found = Diagnostic::new(
                file,
                call.at.line,
                call.at.column,
                format!("no playbook `{}` to call", call.playbook),
            );
            found.hint = did_you_mean(&call.playbook, ids);
            out.push(found);
        }
        return;
    };
    let takes = &target.spec.inputs;
    for (name, at) in &call.inputs {
        if !takes.contains_key(name) {
            let mut found = Diagnostic::new(
                file,
                at.line,
                at.column,
                format!("playbook `{}` takes no input `{name}`", call.playbook),
            );
            found.hint = did_you_mean(name, takes.keys().map(String::as_str));
            out.push(found);
        }
    }
    for (name, input) in takes {
        let given = call.inputs.iter().any(|(n, _)| n == name);
        if input.required && input.default.is_none() && !given {
            out.push(Diagnostic::new(
                file,
                call.inputs_at.line,
                call.inputs_at.column,
                format!("playbook `{}` needs input `{name}`", call.playbook),
            ));
        }
    }
}

/// The duration fields of every step, checked at their values on the position index, before serde
/// reads the file (see [`super::load`]'s note).
pub(super) fn check_durations(steps: Option<&Node>, file: &Path, out: &mut Vec<Diagnostic>) {
    let mut check = |node: Option<&Node>| {
        let Some(node) = node else { return };
        let Some(text) = node.as_str() else { return };
        if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
            return;
        }
        if let Err(message) = text.parse::<HumanDuration>() {
            let at = node.pos();
            out.push(Diagnostic::new(file, at.line, at.column, message));
        }
    };
    let mut nested = Vec::new();
    for step in items(steps) {
        check(step.get("timeout"));
        if let Some(retry) = step.get("retry") {
            check(retry.get("backoff"));
            check(retry.get("max_delay"));
        }
        if let Some(approval) = step.get("approval") {
            check(approval.get("timeout"));
        }
        if let Some(foreach) = step.get("foreach") {
            nested.push(foreach.get("steps"));
        }
        for branch in items(step.get("parallel")) {
            nested.push(branch.get("steps"));
        }
    }
    for steps in nested {
        check_durations(steps, file, out);
    }
}

fn items(node: Option<&Node>) -> &[Node] {
    match node.map(|n| &n.kind) {
        Some(position::Kind::Seq(items)) => items,
        _ => &[],
    }
}

/// The byte offset of 1-based `line`:`column` (in characters) in `text`; 0:0 is its start.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split('\n').enumerate() {
        if i + 1 == line.max(1) {
            return offset
                + l.char_indices()
                    .nth(column.max(1) - 1)
                    .map_or(l.len(), |(b, _)| b);
        }
        offset += l.len() + 1;
    }
    text.len()
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
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

/// `` `a`, `b`, `c` ``.
fn list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn a_json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn an_input_type(kind: InputType) -> &'static str {
    match kind {
        InputType::String => "a string",
        InputType::Number => "a number",
        InputType::Bool => "a bool (true or false)",
        InputType::List => "a list",
        InputType::Map => "a map",
        InputType::Any => "any value",
    }
}

/// The hint naming what an input is, when its action describes it.
fn described(key: &str, description: &str) -> Option<String> {
    (!description.is_empty()).then(|| format!("`{key}`: {description}"))
}

#[cfg(test)]
mod tests {
    use super::StepKind;
    use crate::playbook::load::tests::{compiles, problems};

    #[test]
    fn every_problem_of_a_file_is_reported_at_once_in_file_order() {
        let found = problems(
            "\
id: many
name: Many problems
on:
  source: falco
  when: alert.severity > 'x
steps:
  - id: a
    uses: core.log
    with: { mesage: hi, level: 3 }
  - id: b
    approval: { prompt: \"${{ nope }}\", approvers: soc-l9 }
  - id: b
    script: steps.c
  - id: c
outputs:
  x: \"${{ steps.zz }}\"
",
        );
        assert_eq!(
            found,
            [
                "5:26 `on.when`: Open string is not terminated",
                "9:5 `core.log` needs input `message`",
                "9:13 `core.log` has no input `mesage`",
                "9:32 input `level` of `core.log` is a number, but it takes a string",
                "11:30 `approval.prompt` of step `b`: Undefined variable: nope",
                "11:51 unknown approver group `soc-l9`",
                "12:9 duplicate step id `b`",
                "13:13 `script` of step `b` reads `steps.c`, a step that runs later",
                "14:5 step `c` does nothing",
                "16:11 `outputs.x` reads `steps.zz`, but there is no step `zz`",
            ],
        );
    }

    #[test]
    fn retry_on_a_step_without_attempts_of_its_own_is_reported() {
        let found = problems(
            "id: p
name: P
steps:
  - id: each
    foreach:
      items: '[1, 2]'
      steps:
        - id: inner
          script: '1'
          retry: { attempts: 3 }
    retry: { attempts: 3 }
  - id: ask
    approval: { prompt: go, approvers: soc-l2 }
    retry: { attempts: 2 }
",
        );
        assert_eq!(
            found,
            [
                "11:12 `retry` has no effect on step `each`, which has no attempts of its own",
                "14:12 `retry` has no effect on step `ask`, which has no attempts of its own",
            ],
        );
    }

    #[test]
    fn a_trigger_state_is_checked_against_what_its_sources_send() {
        let on = |source: &str, state: &str| {
            problems(&format!(
                "id: s\nname: States\non:\n  source: {source}\n  state: {state}\nsteps:\n  - id: a\n    uses: core.log\n    with: {{ message: hi }}\n"
            ))
        };
        assert_eq!(on("alertmanager", "resolved"), Vec::<String>::new());
        assert_eq!(
            on("[falco, alertmanager]", "[firing, resolved]"),
            Vec::<String>::new()
        );
        assert_eq!(
            on("falco", "[firing, resolved]"),
            ["5:19 no source of this playbook sends alerts in state `resolved`"]
        );
        assert_eq!(
            on("aws.guardduty", "resolved"),
            ["5:10 no source of this playbook sends alerts in state `resolved`"]
        );
        let unknown = on("alertmanager", "resolvd");
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert!(
            unknown[0].starts_with("5:10")
                && unknown[0].contains(
                    "unknown state `resolvd`; states are `firing`, `resolved` and `suppressed`"
                ),
            "{unknown:?}"
        );
        let compiled = compiles(
            "id: s\nname: S\non: { source: alertmanager, state: resolved }\nsteps:\n  - id: a\n    uses: core.log\n    with: { message: hi }\n",
        );
        assert!(compiled.takes_state(crate::alert::AlertState::Resolved));
        assert!(!compiled.takes_state(crate::alert::AlertState::Firing));
        let without = compiles(
            "id: s\nname: S\non: { source: alertmanager }\nsteps:\n  - id: a\n    uses: core.log\n    with: { message: hi }\n",
        );
        assert!(without.takes_state(crate::alert::AlertState::Firing));
        assert!(!without.takes_state(crate::alert::AlertState::Resolved));
        assert!(!without.takes_state(crate::alert::AlertState::Suppressed));
    }

    #[test]
    fn bad_durations_are_located_at_their_values_all_at_once() {
        let found = problems(
            "\
id: d
name: Durations
steps:
  - id: each
    foreach:
      items: incident.alerts
      steps:
        - id: wait
          uses: core.sleep
          with: { duration: 1s }
          retry: { backoff: 2 s, max_delay: 1m }
  - id: ask
    approval:
      prompt: ok?
      approvers: soc-l1
      timeout: \"an hour\"
",
        );
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("11:29 `2 s` is not a duration"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("16:16 `an hour` is not a duration"),
            "{found:#?}"
        );
    }

    #[test]
    fn rhai_errors_are_located_in_every_kind_of_scalar() {
        let at = |text: &str| {
            problems(text)
                .into_iter()
                .map(|p| p.split(' ').next().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let head = "id: s\nname: Scalars\nsteps:\n  - id: a\n";
        // Double-quoted, with an escape before the error (`\t` is two characters in the file).
        assert_eq!(
            at(&format!(
                "{head}    uses: core.log\n    with: {{ message: \"a\\tb ${{{{ nope }}}}\" }}\n"
            )),
            ["6:32"]
        );
        // Single-quoted, with a doubled quote before the error.
        assert_eq!(
            at(&format!(
                "{head}    uses: core.log\n    with: {{ message: 'it''s ${{{{ nope }}}}' }}\n"
            )),
            ["6:33"]
        );
        // A folded condition: the error is on the block's second line.
        assert_eq!(
            at(&format!(
                "{head}    if: >\n      alert.severity > 5\n      && nope\n    script: 1\n"
            )),
            ["7:10"]
        );
        // A plain script over two lines.
        assert_eq!(
            at(&format!("{head}    script: let x = 1;\n      x + nope\n")),
            ["6:11"]
        );
        // A literal block with the error indented inside it, after an empty line.
        assert_eq!(
            at(&format!(
                "{head}    script: |-\n\n      if true {{\n          nope\n      }}\n"
            )),
            ["8:11"]
        );
    }

    #[test]
    fn steps_read_only_what_has_run() {
        let found = problems(
            "\
id: reads
name: Reads
vars:
  early: \"${{ steps.first.output }}\"
steps:
  - id: first
    script: '\"steps.later\" + `${steps.first.ok}` // steps.later'
  - id: each
    foreach:
      items: steps[\"first\"].output
      steps:
        - id: inner
          if: steps.each.ok
          script: item
  - id: after
    script: steps.inner.output
  - id: both
    parallel:
      - steps:
          - id: left
            script: 1
      - steps:
          - id: right
            script: steps.left.output
",
        );
        assert_eq!(
            found,
            [
                "4:15 `vars.early` is evaluated before any step runs, so it cannot read `steps.first`",
                "7:33 `script` of step `first` reads `steps.first`, the step's own result",
                "13:15 `if` of step `inner` reads `steps.each`, the step it is nested in, which has no result until its nested steps are done",
                "24:21 `script` of step `right` reads `steps.left`, which runs in another branch of the same `parallel` step",
            ],
        );
    }

    #[test]
    fn test_cases_name_steps_sources_and_statuses_that_exist() {
        let found = problems(
            "\
id: t
name: Tests
steps:
  - id: ask
    approval: { prompt: ok?, approvers: soc-l2 }
  - id: say
    uses: core.log
    with: { message: hi }
tests:
  - name: one
    source: aws.guardduty
    approvals: { say: approve, ask: maybe }
    actions: { sya: { output: 1 } }
    expect:
      status: succeded
      steps: [ask, sey]
",
        );
        assert_eq!(
            found,
            [
                "12:18 step `say` is not an approval step",
                "12:37 unknown decision `maybe`",
                "13:16 no step `sya`",
                "15:15 unknown status `succeded`",
                "16:20 no step `sey`",
            ],
        );
    }

    #[test]
    fn polling_test_cases_name_action_steps_and_give_sound_results() {
        let found = problems(
            "\
id: t
name: Tests
steps:
  - id: poll
    uses: core.log
    with: { message: hi }
    retry: { attempts: 5 }
  - id: think
    script: 1
tests:
  - name: one
    actions:
      poll: [{ error: pending, retryable: true }, { output: 1, error: x }]
      think: { output: 1, retryable: true }
    expect:
      status: succeeded
      inputs: { pol: { message: hi }, poll: 3 }
      inputs_exact: { think: {} }
      attempts: { poll: 3, thnk: 1 }
",
        );
        assert_eq!(
            found,
            [
                "13:51 a canned result has both `output` and `error`",
                "14:7 step `think` is not an action step",
                "14:27 `retryable` says how an `error` fails, but this result has no `error`",
                "17:17 no step `pol`",
                "17:45 `expect.inputs.poll` is a number",
                "18:23 step `think` is not an action step",
                "19:28 no step `thnk`",
            ],
        );
    }

    #[test]
    fn a_foreach_item_is_readable_only_inside_it() {
        let text = "\
id: f
name: Foreach
steps:
  - id: each
    foreach:
      items: incident.alerts
      as: entity
      steps:
        - id: look
          script: entity.id
  - id: after
    script: steps.look.output
";
        let compiled = compiles(text);
        assert!(
            matches!(&compiled.steps[0].kind, StepKind::Foreach { name, .. } if name == "entity")
        );
        let found = problems(&text.replace("steps.look.output", "entity.id"));
        assert_eq!(
            found,
            ["12:13 `script` of step `after`: Undefined variable: entity"]
        );
    }
}
