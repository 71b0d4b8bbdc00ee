//! The checked-in JSON Schema matches the model, and every workflow file conforms to it.
use std::path::{Path, PathBuf};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                yaml_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
}

#[test]
fn checked_in_schema_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/workflow.schema.json");
    let generated = auditflow::cli::schema_json() + "\n";
    assert!(
        crate::snapshot::compare(&path, &generated).is_none(),
        "schemas/workflow.schema.json is stale: run `cargo run -- schema > schemas/workflow.schema.json`"
    );
}

#[test]
fn every_workflow_file_conforms_to_the_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value = serde_json::from_str(&auditflow::cli::schema_json()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let mut files = Vec::new();
    yaml_files(&root.join("workflows"), &mut files);
    yaml_files(&root.join("tests/cases/valid"), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let value: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {}", f.display(), errors.join("; "));
    }
    // and the schema rejects a typo, like the loader does
    let bad =
        serde_json::json!({"name": "x", "steps": [{"id": "a", "retyr": 1, "call": {"url": "u"}}]});
    assert!(!validator.is_valid(&bad));
}
