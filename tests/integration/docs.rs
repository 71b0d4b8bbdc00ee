//! The documentation checked against the tree and the code, so it cannot drift silently: every
//! relative link in README.md, CONTRIBUTING.md and docs/ resolves (the file, and a `#anchor` to
//! a heading by GitHub's slug rules); the exit codes, template helpers and step fields listed in
//! docs/reference/ are exactly the code's and the schema's; and the README's example workflow
//! validates and runs against the simulator.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::common::{auditflow, root, text, Dir};

/// README.md, CONTRIBUTING.md and every Markdown file under docs/.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines outside fenced code blocks, numbered from 1.
fn prose_lines(markdown: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut prose = Vec::new();
    for (i, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            prose.push((i + 1, line));
        }
    }
    prose
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped (letters, digits,
/// `-` and `_` kept), each space a `-`.
fn github_slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings; a repeated slug gets `-1`, `-2`... as on GitHub.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(markdown) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        let Some(title) = line.get(hashes..).and_then(|t| t.strip_prefix(' ')) else {
            continue;
        };
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let slug = github_slug(title);
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 { slug } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// The targets of a line's Markdown links and images (`[text](target)`), code spans left out.
fn link_targets(line: &str) -> Vec<String> {
    let without_code: String = line
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect();
    without_code
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_string()))
        .filter(|target| !target.contains(char::is_whitespace))
        .collect()
}

/// Why a relative link from `file` does not resolve, if it does not.
fn broken(file: &Path, target: &str) -> Option<String> {
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let resolved = if path.is_empty() {
        file.to_path_buf()
    } else {
        file.parent().unwrap().join(path)
    };
    if !resolved.exists() {
        return Some(format!("{target}: no file {}", resolved.display()));
    }
    let is_markdown = resolved.extension().is_some_and(|e| e == "md");
    if anchor.is_empty() || !is_markdown {
        return None;
    }
    let known = anchors(&read(&resolved));
    (!known.contains(anchor)).then(|| format!("{target}: no heading with the anchor #{anchor}"))
}

#[test]
fn every_relative_link_resolves_to_a_file_and_heading() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let markdown = read(&file);
        for (n, line) in prose_lines(&markdown) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                if let Some(why) = broken(&file, &target) {
                    let shown = file.strip_prefix(root()).unwrap_or(&file);
                    problems.push(format!("{}:{n}: {why}", shown.display()));
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} relative links found: is the scan broken?"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_slug_rules_are_githubs() {
    assert_eq!(
        github_slug("Google's encryption key: `keygen` and the upload preflight"),
        "googles-encryption-key-keygen-and-the-upload-preflight"
    );
    assert_eq!(
        github_slug("`for_each` (ForEachSpec)"),
        "for_each-foreachspec"
    );
    let twice = anchors("# A\n## Notes\n```\n# not a heading\n```\n### Notes\n");
    let want: BTreeSet<String> = ["a", "notes", "notes-1"].map(String::from).into();
    assert_eq!(twice, want);
}

/// The first cell of every table row of a reference page, without its backticks; header rows
/// (whose first cell is `header`) and rule rows left out.
fn first_cells(page: &str, header: &str) -> Vec<String> {
    let markdown = read(&root().join(page));
    prose_lines(&markdown)
        .into_iter()
        .filter_map(|(_, line)| line.strip_prefix('|'))
        .filter_map(|row| row.split_once('|'))
        .map(|(first, _)| first.trim().trim_matches('`').to_string())
        .filter(|first| first != header && !first.starts_with("---"))
        .collect()
}

#[test]
fn the_exit_codes_page_lists_the_codes_the_tool_gives() {
    let documented: Vec<u8> = first_cells("docs/reference/exit-codes.md", "code")
        .into_iter()
        .map(|code| {
            code.parse()
                .unwrap_or_else(|_| panic!("not a code: {code}"))
        })
        .collect();
    assert_eq!(documented, auditflow::cli::exit::ALL.to_vec());

    let dir = Dir::new();
    let help = auditflow(&["--help"], &[], dir.path());
    let (stdout, _) = text(&help);
    let listed = stdout
        .split_once("Exit codes:")
        .expect("--help lists exit codes")
        .1;
    for code in auditflow::cli::exit::ALL {
        let row = format!("\n  {code} ");
        assert!(
            listed.contains(&row),
            "--help does not list {code}:\n{listed}"
        );
    }
}

#[test]
fn the_helpers_page_lists_every_registered_helper() {
    let documented: BTreeSet<String> = first_cells("docs/reference/helpers.md", "helper")
        .into_iter()
        .collect();
    let registered: BTreeSet<String> = auditflow::helper_names()
        .into_iter()
        .map(String::from)
        .collect();
    let missing: Vec<_> = registered.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&registered).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/reference/helpers.md: not documented: {missing:?}; not helpers: {unknown:?}"
    );
}

/// The fields the step-fields page lists per schema definition (the name in parentheses at the
/// end of each `##` heading), each with whether it is marked required.
fn documented_fields(page: &str) -> BTreeMap<String, BTreeMap<String, bool>> {
    let mut sections: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in prose_lines(page) {
        if let Some(heading) = line.strip_prefix("## ") {
            let def = heading
                .rsplit_once('(')
                .and_then(|(_, d)| d.strip_suffix(')'))
                .unwrap_or_else(|| panic!("line {n}: a section names no schema definition"));
            current = Some(def.to_string());
            sections.entry(def.to_string()).or_default();
            continue;
        }
        let Some(def) = &current else { continue };
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let (field, rest) = cell.split_once('`').unwrap();
        let required = rest.starts_with(" (required)");
        let fields = sections.get_mut(def).unwrap();
        assert!(
            fields.insert(field.to_string(), required).is_none(),
            "line {n}: {field} twice"
        );
    }
    sections
}

/// A schema object's properties, each with whether it is required.
fn schema_fields(object: &serde_json::Value) -> BTreeMap<String, bool> {
    let required: BTreeSet<&str> = object["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    object["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (k.clone(), required.contains(k.as_str())))
        .collect()
}

#[test]
fn the_step_fields_page_lists_every_field_of_the_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&read(&root().join("schemas/workflow.schema.json"))).unwrap();
    let mut expected = BTreeMap::from([("Workflow".to_string(), schema_fields(&schema))]);
    for (name, def) in schema["$defs"].as_object().unwrap() {
        if def.get("properties").is_some() {
            expected.insert(name.clone(), schema_fields(def));
        }
    }
    let documented = documented_fields(&read(&root().join("docs/reference/step-fields.md")));
    let expected_defs: BTreeSet<_> = expected.keys().collect();
    let documented_defs: BTreeSet<_> = documented.keys().collect();
    assert_eq!(
        documented_defs, expected_defs,
        "docs/reference/step-fields.md: sections (left) against the schema's objects (right)"
    );
    for (def, fields) in &expected {
        assert_eq!(
            &documented[def], fields,
            "docs/reference/step-fields.md, {def}: fields and (required) marks (left) against the schema (right)"
        );
    }
}

/// The README's example workflow: the first `yaml` block after `## An example`.
fn readme_example() -> String {
    let readme = read(&root().join("README.md"));
    let section = readme
        .split_once("## An example")
        .expect("the README has an example")
        .1;
    let block = section.split_once("```yaml\n").expect("a yaml block").1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_string()
}

#[test]
fn the_readme_example_validates_and_runs_against_the_simulator() {
    let dir = Dir::new();
    let workflow = dir.write("processing-queue.yaml", &readme_example());
    let file = workflow.display().to_string();
    let tmp = dir.path().display().to_string();

    let validated = auditflow(&["validate", &file], &[], dir.path());
    assert_eq!(validated.status.code(), Some(0), "{:?}", text(&validated));

    let rehearsed = auditflow(
        &["run", &file, "--dry-run=sim"],
        &[("TMPDIR", &tmp)],
        dir.path(),
    );
    let (stdout, stderr) = text(&rehearsed);
    assert_eq!(rehearsed.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("queue"), "{stdout}");
    assert!(stderr.contains("the simulator saw"), "{stderr}");
}
