//! What a loop's iterations read of the scope around them, so each iteration carries only that
//! (not the whole item list or a listing's body): per-item cost independent of the item count.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::state::keep::{copy_path, copy_path_in};
use crate::template::Template;
use crate::workflow::Loaded;

/// Paths under one root (`inputs` or `steps`) that templates read; None: the whole root.
type Paths = Option<Vec<Vec<String>>>;

/// The `inputs.*` and `steps.*` paths read by the templates of one loop's body and of the
/// file's connections and defaults (which steps in the body render too).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct LoopReads {
    inputs: Paths,
    steps: Paths,
}

impl LoopReads {
    /// Reads everything: nothing is pruned.
    fn all() -> LoopReads {
        LoopReads::default()
    }

    /// What the body of the loop `loop_id` in `file` reads (everything when the loop is not
    /// found or a template reads in ways not traced: `this` at the top, `../`).
    pub(super) fn of(file: &Loaded, loop_id: &str) -> LoopReads {
        let Ok(model) = serde_json::to_value(&file.workflow) else {
            return LoopReads::all();
        };
        let Some(body) = find_body(&model["steps"], loop_id) else {
            return LoopReads::all();
        };
        let mut c = Collector::default();
        c.collect(body);
        if let Value::Object(top) = &model {
            for (k, v) in top {
                if !matches!(k.as_str(), "steps" | "outputs" | "inputs") {
                    c.collect(v);
                }
            }
        }
        if c.untraced {
            return LoopReads::all();
        }
        LoopReads {
            inputs: c.inputs,
            steps: c.steps,
        }
    }

    /// `inputs` as the iterations see it.
    pub(super) fn inputs(&self, inputs: &Value) -> Value {
        match (&self.inputs, inputs) {
            (Some(paths), Value::Object(_)) => Value::Object(pruned(inputs, paths)),
            _ => inputs.clone(),
        }
    }

    /// Earlier steps' outputs as the iterations see them.
    pub(super) fn steps(&self, steps: &Map<String, Value>) -> Map<String, Value> {
        match &self.steps {
            Some(paths) => {
                let mut out = Map::new();
                for p in paths {
                    copy_path_in(steps, p, &mut out);
                }
                out
            }
            None => steps.clone(),
        }
    }
}

fn pruned(v: &Value, paths: &[Vec<String>]) -> Map<String, Value> {
    let mut out = Map::new();
    for p in paths {
        copy_path(v, p, &mut out);
    }
    out
}

/// The body (`for_each.steps`) of the loop step `id`, searched through nested loops.
fn find_body<'a>(steps: &'a Value, id: &str) -> Option<&'a Value> {
    for s in steps.as_array()? {
        let body = &s["for_each"]["steps"];
        if body.is_null() {
            continue;
        }
        if s["id"].as_str() == Some(id) {
            return Some(body);
        }
        if let Some(found) = find_body(body, id) {
            return Some(found);
        }
    }
    None
}

/// Gathers the root paths templates read.
struct Collector {
    inputs: Paths,
    steps: Paths,
    /// A template reads the context in a way not traced to a root path.
    untraced: bool,
}

impl Default for Collector {
    fn default() -> Self {
        Collector {
            inputs: Some(Vec::new()),
            steps: Some(Vec::new()),
            untraced: false,
        }
    }
}

impl Collector {
    fn collect(&mut self, v: &Value) {
        match v {
            Value::String(s) if s.contains("{{") => self.template(s),
            Value::Array(items) => items.iter().for_each(|i| self.collect(i)),
            Value::Object(m) => m.values().for_each(|i| self.collect(i)),
            _ => {}
        }
    }

    fn template(&mut self, src: &str) {
        // Reads relative to a block (`../x`) or of the context itself (`this`) are not
        // traced to root paths: keep everything rather than guess.
        if src.contains("../") || src.contains("this") || src.contains("@root") {
            self.untraced = true;
            return;
        }
        let Ok(t) = Template::compile(src) else {
            self.untraced = true;
            return;
        };
        for var in t.variables() {
            match var.path.split_first() {
                Some((root, rest)) if root == "inputs" => add(&mut self.inputs, rest),
                Some((root, rest)) if root == "steps" => add(&mut self.steps, rest),
                _ => {}
            }
        }
    }
}

fn add(paths: &mut Paths, rest: &[String]) {
    if rest.is_empty() {
        *paths = None;
    } else if let Some(p) = paths {
        p.push(rest.to_vec());
    }
}

/// [`LoopReads`] per file and loop, worked out once per run (a nested loop starts once per
/// outer item).
#[derive(Default)]
pub(super) struct LoopReadsCache(Mutex<HashMap<(PathBuf, String), Arc<LoopReads>>>);

impl LoopReadsCache {
    pub(super) fn get(&self, file: &Loaded, loop_id: &str) -> Arc<LoopReads> {
        let key = (file.path.clone(), loop_id.to_string());
        let mut map = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        map.entry(key)
            .or_insert_with(|| Arc::new(LoopReads::of(file, loop_id)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(src: &str) -> Arc<Loaded> {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("w.yaml");
        std::fs::write(&p, src).expect("write");
        crate::workflow::validate::validate_file(&p)
            .expect("valid")
            .root
    }

    const WF: &str = "name: w
inputs:
  users: {type: list}
  domain: {type: string, default: d}
steps:
  - id: list
    call: {url: 'http://127.0.0.1:9/l'}
  - id: each
    for_each:
      items: '{{ inputs.users }}'
      steps:
        - id: get
          call: {url: 'http://127.0.0.1:9/{{ inputs.domain }}/{{ item }}', query: {n: '{{ steps.list.body.n }}'}}
";

    #[test]
    fn iterations_carry_only_what_the_body_reads() {
        let f = load(WF);
        let r = LoopReads::of(&f, "each");
        let inputs = json!({"users": ["a", "b"], "domain": "d"});
        assert_eq!(r.inputs(&inputs), json!({"domain": "d"}));
        let mut steps = Map::new();
        steps.insert(
            "list".into(),
            json!({"status": 200, "body": {"n": 3, "users": [1, 2]}}),
        );
        assert_eq!(
            Value::Object(r.steps(&steps)),
            json!({"list": {"body": {"n": 3}}})
        );
    }

    #[test]
    fn untraced_reads_keep_everything() {
        let f = load(&WF.replace("{{ item }}", "{{#each item}}{{ ../inputs.x }}{{/each}}"));
        assert_eq!(LoopReads::of(&f, "each"), LoopReads::all());
        assert_eq!(LoopReads::of(&load(WF), "nope"), LoopReads::all());
    }
}
