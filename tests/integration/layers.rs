//! The crate's top-level modules import each other one way only. docs/architecture.md states
//! the layer order (its "Layer order" line, bottom first); this test reads every `crate::X`
//! path in src/**/*.rs and fails on an import from a module to one listed after it, which is
//! how an import circle between top-level modules (`cli` ↔ `demo`, `workflow` ↔ `template`)
//! would come back. A new top-level module must be placed in that line.
//!
//! The simulator is a crate of its own (`crates/sim`, docs/architecture.md "Workspace"): its
//! manifest must not depend on the tool, and only the modules built with the `sim` feature
//! (`demo`, `rehearse`, `cli/simulator.rs`) may name it, so the tool builds without it.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::common::root;

/// The top-level modules, bottom first, as docs/architecture.md lists them.
fn documented_layers() -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let line = doc
        .lines()
        .find(|l| l.starts_with("Layer order, bottom first:"))
        .expect("docs/architecture.md has a `Layer order, bottom first:` line");
    line.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The modules `lib.rs` declares (`mod X;`, whatever its visibility).
fn declared_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_suffix(';'))
        .filter_map(|l| l.split("mod ").nth(1).filter(|_| l.contains("mod ")))
        .map(str::to_string)
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of src/ belongs to (`src/cli/run.rs` and `src/cli.rs` are `cli`).
fn owner(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root().join("src")).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// The names right after `crate::` on a line of code: `crate::a::b` gives `a`, and
/// `crate::{a, b::c}` gives `a` and `b`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` in a macro, or a longer identifier ending in `crate`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            names.extend(inner.split(',').map(|p| ident(p.trim())));
        } else {
            names.push(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every import between two top-level modules: (from, to) → where (`file:line`).
fn imports(modules: &BTreeSet<String>) -> BTreeMap<(String, String), Vec<String>> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in files {
        let Some(from) = owner(&file).filter(|m| modules.contains(m)) else {
            continue; // lib.rs and main.rs are the root
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for to in crate_paths(code) {
                if to != from && modules.contains(&to) {
                    let at = format!("{}:{}", file.display(), n + 1);
                    edges.entry((from.clone(), to)).or_default().push(at);
                }
            }
        }
    }
    edges
}

#[test]
fn top_level_modules_import_only_the_layers_below_them() {
    let layers = documented_layers();
    let modules = declared_modules();
    let listed: BTreeSet<String> = layers.iter().cloned().collect();
    assert_eq!(
        listed, modules,
        "docs/architecture.md's layer order must list exactly the modules of src/lib.rs"
    );
    let rank = |m: &str| layers.iter().position(|l| l == m).unwrap();
    let upward: Vec<String> = imports(&modules)
        .into_iter()
        .filter(|((from, to), _)| rank(to) > rank(from))
        .map(|((from, to), at)| format!("{from} → {to} (above it) at {}", at.join(", ")))
        .collect();
    assert!(
        upward.is_empty(),
        "imports against the layer order of docs/architecture.md (a lower module must not \
         import a higher one; move the shared item down, or hand it in from above):\n{}",
        upward.join("\n")
    );
}

/// The files of src/ that may name the simulator crate: the modules declared only with the
/// `sim` feature.
const SIMULATOR_USERS: [&str; 3] = ["demo.rs", "rehearse.rs", "cli/simulator.rs"];

/// The dependency names of a manifest's `[*dependencies*]` tables (`name = ...`,
/// `name.workspace = true`), and the `package = "..."` they rename.
fn manifest_dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line.trim_matches(['[', ']']).contains("dependencies");
            continue;
        }
        if !in_dependencies || line.starts_with('#') || line.is_empty() {
            continue;
        }
        names.push(ident_or_dash(line));
        if let Some(at) = line.find("package = \"") {
            names.push(ident_or_dash(&line[at + "package = \"".len()..]));
        }
    }
    names
}

fn ident_or_dash(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

#[test]
fn the_simulator_crate_does_not_depend_on_the_tool() {
    let manifest = std::fs::read_to_string(root().join("crates/sim/Cargo.toml")).unwrap();
    let deps = manifest_dependencies(&manifest);
    assert!(
        deps.contains(&"axum".to_string()),
        "dependencies read: {deps:?}"
    );
    assert!(
        !deps.iter().any(|d| d == "auditflow"),
        "crates/sim/Cargo.toml must not depend on auditflow (the simulator is written from the \
         vendor pages and shares no code with the tool): {deps:?}"
    );
    assert!(
        !manifest.contains("path = \"../.."),
        "crates/sim/Cargo.toml must not name the tool's directory as a path dependency"
    );
}

#[test]
fn only_the_modules_built_with_the_sim_feature_name_the_simulator() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let src = root().join("src");
    let naming: Vec<String> = files
        .iter()
        .filter(|f| {
            let rel = f
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            !SIMULATOR_USERS.contains(&rel.as_str())
        })
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.contains("auditflow_sim") || text.contains("crate::sim::")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        naming.is_empty(),
        "only {SIMULATOR_USERS:?} may use the simulator (they are built with the `sim` \
         feature only): {naming:?}"
    );
    let gated = |file: &str, declaration: &str| {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let at = lines.iter().position(|l| *l == declaration);
        assert!(
            at.is_some_and(|i| i > 0 && lines[i - 1] == "#[cfg(feature = \"sim\")]"),
            "src/{file}: `{declaration}` must be declared under #[cfg(feature = \"sim\")]"
        );
    };
    gated("lib.rs", "pub mod demo;");
    gated("lib.rs", "pub mod rehearse;");
    gated("cli/mod.rs", "mod simulator;");
}

#[test]
fn crate_paths_are_read_from_plain_and_grouped_imports() {
    assert_eq!(crate_paths("use crate::cli::{exit, RunArgs};"), ["cli"]);
    assert_eq!(
        crate_paths("use crate::{events::Event, state::Store};"),
        ["events", "state"]
    );
    assert_eq!(
        crate_paths("let x = crate::workflow::duration::parse(crate::engine::WAIT);"),
        ["workflow", "engine"]
    );
    assert_eq!(
        crate_paths("$crate::report::console::out()"),
        Vec::<String>::new()
    );
}
