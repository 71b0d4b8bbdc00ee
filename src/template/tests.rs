//! Unit tests for templates: rendering, typing, strictness, variables, helpers, errors.

use serde_json::{json, Value};

use super::*;

fn ctx() -> Value {
    json!({
        "inputs": {"domain": "example.com", "count": 3, "flag": true, "amp": "a&b<c>", "empty": "", "nothing": null},
        "env": {"HOME": "/home/x"},
        "steps": {
            "list": {"body": {"entries": [{"id": "u1", "name": "Ann"}, {"id": "u2", "name": "Bob"}], "total": 2}},
            "create": {"body": {"properties": {"status": "COMPLETED"}}}
        },
        "item": "u1",
        "index": 0,
        "run": {"id": "r-1", "started_at": "2024-03-01T00:00:00Z", "workflow_dir": "/nonexistent-dir"},
        "response": {"status": 200, "body": {"properties": {"status": "COMPLETED"}}}
    })
}

fn render(src: &str) -> Result<String, TemplateError> {
    Template::compile(src)?.render_string(&ctx())
}

fn value(src: &str) -> Result<Value, TemplateError> {
    Template::compile(src)?.render_value(&ctx())
}

fn vars(src: &str) -> Vec<String> {
    Template::compile(src)
        .expect("compiles")
        .variables()
        .into_iter()
        .map(|v| v.path.join("."))
        .collect()
}

fn helper_err(src: &str) -> (String, String) {
    match render(src) {
        Err(TemplateError::Helper { helper, message }) => (helper, message),
        other => panic!("expected a helper error for {src}, got {other:?}"),
    }
}

/// The message of a helper call refused at compile time.
fn call_err(src: &str) -> String {
    match Template::compile(src) {
        Err(TemplateError::Call { message, .. }) => message,
        other => panic!("expected a compile-time call error for {src}, got {other:?}"),
    }
}

fn undefined(src: &str) -> (String, Option<usize>) {
    match render(src) {
        Err(TemplateError::UndefinedVariable { path, offset }) => (path, offset),
        other => panic!("expected an undefined variable error for {src}, got {other:?}"),
    }
}

// ---- rendering basics ----

#[test]
fn no_html_escaping() {
    assert_eq!(render("{{inputs.amp}}").unwrap(), "a&b<c>");
    assert_eq!(render("x={{inputs.amp}}").unwrap(), "x=a&b<c>");
    assert_eq!(render("{{{inputs.amp}}}").unwrap(), "a&b<c>");
    assert_eq!(render("{{concat inputs.amp \"&\"}}").unwrap(), "a&b<c>&");
}

#[test]
fn mixed_text_renders_a_string() {
    let t = Template::compile("/mail/export/{{ inputs.domain }}/{{ item }}").unwrap();
    assert!(!t.is_static());
    assert_eq!(
        t.render_value(&ctx()).unwrap(),
        json!("/mail/export/example.com/u1")
    );
    assert_eq!(value("n={{inputs.count}}").unwrap(), json!("n=3"));
}

#[test]
fn static_templates() {
    let t = Template::compile("plain text & more").unwrap();
    assert!(t.is_static());
    assert!(t.variables().is_empty());
    assert_eq!(t.source(), "plain text & more");
    assert_eq!(
        t.render_value(&json!({})).unwrap(),
        json!("plain text & more")
    );
    // an escaped expression is text
    let t = Template::compile(r"literal \{{x}}").unwrap();
    assert!(t.is_static());
    assert_eq!(t.render_string(&json!({})).unwrap(), "literal {{x}}");
    assert!(Template::compile("").unwrap().is_static());
}

#[test]
fn arrays_and_objects_render_as_json_in_text() {
    assert_eq!(
        render("ids: {{steps.list.body.entries}}").unwrap(),
        r#"ids: [{"id":"u1","name":"Ann"},{"id":"u2","name":"Bob"}]"#
    );
    assert_eq!(
        render("{{#each steps.list.body.entries}}[{{this}}]{{/each}}").unwrap(),
        r#"[{"id":"u1","name":"Ann"}][{"id":"u2","name":"Bob"}]"#
    );
    assert_eq!(render("{{split \"a,b\" \",\"}}!").unwrap(), r#"["a","b"]!"#);
    // null renders as empty text
    assert_eq!(render("<{{inputs.nothing}}>").unwrap(), "<>");
}

// ---- typed values ----

#[test]
fn typed_render_of_single_expressions() {
    assert_eq!(
        value("{{ steps.list.body.entries }}").unwrap(),
        json!([{"id": "u1", "name": "Ann"}, {"id": "u2", "name": "Bob"}])
    );
    assert_eq!(value("  {{ inputs.count }}\n").unwrap(), json!(3));
    assert_eq!(value("{{inputs.flag}}").unwrap(), json!(true));
    assert_eq!(value("{{inputs.nothing}}").unwrap(), Value::Null);
    assert_eq!(
        value("{{ steps.create.body.properties }}").unwrap(),
        json!({"status": "COMPLETED"})
    );
    assert_eq!(
        value("{{ eq response.body.properties.status \"COMPLETED\" }}").unwrap(),
        json!(true)
    );
    assert_eq!(value("{{ gt inputs.count 5 }}").unwrap(), json!(false));
    assert_eq!(
        value("{{ len steps.list.body.entries }}").unwrap(),
        json!(2)
    );
    assert_eq!(value("{{ json inputs.count }}").unwrap(), json!("3"));
    assert_eq!(
        value("{{ split \"a,b\" \",\" }}").unwrap(),
        json!(["a", "b"])
    );
    assert_eq!(value("{{ duration_ms \"5m\" }}").unwrap(), json!(300_000));
    assert_eq!(
        value("{{ steps.list.body.entries.[1].name }}").unwrap(),
        json!("Bob")
    );
    assert_eq!(
        value("{{ steps.list.body.entries.0.id }}").unwrap(),
        json!("u1")
    );
    assert_eq!(value("{{{ inputs.count }}}").unwrap(), json!(3));
    assert_eq!(value("{{ @root.inputs.count }}").unwrap(), json!(3));
    assert_eq!(value("{{ this.inputs.count }}").unwrap(), json!(3));
    // a subexpression as the whole expression
    assert_eq!(value("{{ (eq inputs.count 3) }}").unwrap(), json!(true));
    // render_string of a typed expression gives its text
    assert_eq!(render("{{ inputs.count }}").unwrap(), "3");
    assert_eq!(render("{{ eq 1 1 }}").unwrap(), "true");
}

#[test]
fn context_can_be_reused() {
    let t = Template::compile("{{item}}-{{index}}").unwrap();
    let typed = Template::compile("{{item}}").unwrap();
    let mut c = TemplateContext::new(ctx());
    let mut seen = Vec::new();
    for (i, id) in ["a", "b"].iter().enumerate() {
        c.value_mut()["item"] = json!(id);
        c.value_mut()["index"] = json!(i);
        seen.push(t.render_string_in(&c).unwrap());
        assert_eq!(typed.render_value_in(&c).unwrap(), json!(id));
    }
    assert_eq!(seen, ["a-0", "b-1"]);
    assert!(Template::compile("{{eq item \"b\"}}")
        .unwrap()
        .render_bool_in(&c)
        .unwrap());
}

#[test]
fn render_bool_truthiness() {
    let cases: &[(Value, bool)] = &[
        (json!(true), true),
        (json!(false), false),
        (Value::Null, false),
        (json!(0), false),
        (json!(0.0), false),
        (json!(2), true),
        (json!(-1.5), true),
        (json!(""), false),
        (json!("   "), false),
        (json!("true"), true),
        (json!(" TRUE "), true),
        (json!("False"), false),
        (json!("false\n"), false),
        (json!("no"), true),
        (json!("0"), true),
        (json!([]), false),
        (json!([0]), true),
        (json!({}), false),
        (json!({"a": 1}), true),
    ];
    let t = Template::compile("{{ v }}").unwrap();
    for (v, expected) in cases {
        assert_eq!(
            t.render_bool(&json!({ "v": v })).unwrap(),
            *expected,
            "truthiness of {v}"
        );
    }
    // conditions rendered through text
    let t = Template::compile("{{#if inputs.flag}}TRUE{{else}}false{{/if}}").unwrap();
    assert!(t.render_bool(&ctx()).unwrap());
    let t = Template::compile("{{#if inputs.nothing}}true{{else}} false {{/if}}").unwrap();
    assert!(!t.render_bool(&ctx()).unwrap());
    assert!(
        Template::compile("{{eq response.body.properties.status \"COMPLETED\"}}")
            .unwrap()
            .render_bool(&ctx())
            .unwrap()
    );
}

// ---- strictness ----

#[test]
fn undefined_variable_in_output_names_the_path() {
    let (path, offset) = undefined("/x/{{ inputs.domian }}");
    assert_eq!(path, "inputs.domian");
    assert_eq!(offset, Some(3));
    let err = render("{{inputs.domian}}").unwrap_err();
    assert_eq!(err.to_string(), "undefined variable `inputs.domian`");
    // typed path and the general path agree
    let (path, offset) = undefined("{{ steps.nope.body }}");
    assert_eq!((path.as_str(), offset), ("steps.nope.body", Some(0)));
    // inside a block, offset of the inner expression
    let (path, offset) = undefined("ab{{#if inputs.flag}}\n  {{inputs.x}}{{/if}}");
    assert_eq!((path.as_str(), offset), ("inputs.x", Some(24)));
    // a path through a scalar is undefined too
    assert_eq!(
        undefined("{{inputs.domain.length}}").0,
        "inputs.domain.length"
    );
    assert_eq!(
        undefined("{{steps.list.body.entries.[5]}}").0,
        "steps.list.body.entries.[5]"
    );
}

#[test]
fn undefined_variable_in_helper_params_names_the_path() {
    assert_eq!(undefined("{{lower inputs.nme}}").0, "inputs.nme");
    assert_eq!(
        undefined("x {{eq inputs.nme \"a\"}}"),
        ("inputs.nme".into(), Some(2))
    );
    assert_eq!(
        undefined("{{and inputs.flag inputs.nope}}").0,
        "inputs.nope"
    );
    assert_eq!(undefined("{{json inputs.x pretty=true}}").0, "inputs.x");
    assert_eq!(
        undefined("{{json inputs.count pretty=inputs.p}}").0,
        "inputs.p"
    );
    // in a subexpression
    assert_eq!(undefined("{{eq (lower inputs.nme) \"a\"}}").0, "inputs.nme");
    // in a subexpression inside #if
    assert_eq!(
        undefined("{{#if (eq inputs.nme \"a\")}}y{{/if}}").0,
        "inputs.nme"
    );
    // in the typed path
    match value("{{ eq inputs.nme 1 }}") {
        Err(TemplateError::UndefinedVariable { path, offset }) => {
            assert_eq!((path.as_str(), offset), ("inputs.nme", Some(0)));
        }
        other => panic!("{other:?}"),
    }
    // #each without else on a missing value fails (handlebars strict mode)
    assert_eq!(
        undefined("{{#each inputs.nope}}x{{/each}}").0,
        "inputs.nope"
    );
}

#[test]
fn if_and_default_tolerate_missing_values() {
    assert_eq!(render("a{{#if inputs.nope}}b{{/if}}c").unwrap(), "ac");
    assert_eq!(
        render("{{#unless inputs.nope}}none{{/unless}}").unwrap(),
        "none"
    );
    assert_eq!(
        render("{{#each inputs.nope}}x{{else}}empty{{/each}}").unwrap(),
        "empty"
    );
    assert_eq!(
        render("{{default inputs.nope \"fallback\"}}").unwrap(),
        "fallback"
    );
    assert_eq!(value("{{default inputs.nope 7}}").unwrap(), json!(7));
    assert_eq!(render("{{default inputs.empty \"f\"}}").unwrap(), "f");
    assert_eq!(render("{{default inputs.nothing \"f\"}}").unwrap(), "f");
    assert_eq!(value("{{default inputs.count 9}}").unwrap(), json!(3));
    assert_eq!(value("{{default inputs.flag false}}").unwrap(), json!(true));
    assert_eq!(
        render("{{default inputs.a inputs.b \"last\"}}").unwrap(),
        "last"
    );
    // the fallback itself must exist
    assert_eq!(undefined("{{default inputs.a inputs.b}}").0, "inputs.b");
    assert!(call_err("{{default inputs.a}}").starts_with("`default` takes at least 2"));
}

// ---- variables() ----

#[test]
fn variables_cover_all_expression_forms() {
    assert_eq!(
        vars("/x/{{ inputs.domain }}/{{ item }}"),
        ["inputs.domain", "item"]
    );
    assert_eq!(
        vars("{{ eq response.body.properties.status \"COMPLETED\" }}"),
        ["response.body.properties.status"]
    );
    // helper params, hash values and subexpressions; literals are not variables
    assert_eq!(
        vars(
            r#"{{json (default inputs.a (lower env.B)) pretty=inputs.p}} {{eq 1 "x"}} {{now}} {{concat true null 2.5 'y'}}"#
        ),
        ["inputs.a", "env.B", "inputs.p"]
    );
    // block params and nested blocks, else-if chains and else branches
    assert_eq!(
        vars("{{#if inputs.a}}{{#unless (or inputs.b inputs.c)}}{{steps.s.body}}{{/unless}}{{else if inputs.d}}{{env.E}}{{else}}{{index}}{{/if}}"),
        ["inputs.a", "inputs.b", "inputs.c", "steps.s.body", "inputs.d", "env.E", "index"]
    );
    // #each/#with bodies are relative; @root is absolute; ../, this, @index are not reported
    assert_eq!(
        vars("{{#each steps.list.body.entries as |e|}}{{name}}{{this.id}}{{e.id}}{{../item}}{{@index}}{{@root.inputs.domain}}{{lookup ../inputs.map id}}{{else}}{{inputs.none}}{{/each}}"),
        ["steps.list.body.entries", "inputs.domain", "inputs.none"]
    );
    assert_eq!(
        vars("{{#with steps.create.body}}{{properties.status}}{{#if @root.run.id}}{{/if}}{{/with}}{{run.workflow_dir}}"),
        ["steps.create.body", "run.id", "run.workflow_dir"]
    );
    // array index segments
    assert_eq!(
        vars("{{steps.list.body.entries.[0].id}} {{steps.list.body.entries.1}}"),
        ["steps.list.body.entries.0.id", "steps.list.body.entries.1"]
    );
    // this at the root is the root context
    assert_eq!(vars("{{this.inputs.x}} {{this}}"), ["inputs.x"]);
}

#[test]
fn variable_offsets_point_at_their_tag() {
    let src = "ab {{inputs.a}}\n{{#if (eq inputs.b 1)}}é {{inputs.c}}{{else if inputs.d}}{{/if}} {{json inputs.e}}";
    let t = Template::compile(src).unwrap();
    let got: Vec<(String, usize)> = t
        .variables()
        .into_iter()
        .map(|v| (v.path.join("."), v.offset))
        .collect();
    let at = |needle: &str| src.find(needle).unwrap();
    assert_eq!(
        got,
        [
            ("inputs.a".to_string(), at("{{inputs.a")),
            ("inputs.b".to_string(), at("{{#if")),
            ("inputs.c".to_string(), at("{{inputs.c")),
            ("inputs.d".to_string(), at("{{else if")),
            ("inputs.e".to_string(), at("{{json")),
        ]
    );
    // nested blocks inside a branch do not confuse else-if offsets
    let src = "{{#if a}}{{#if b}}x{{else}}y{{/if}}{{else if c}}z{{/if}}";
    let t = Template::compile(src).unwrap();
    let c = t.variables().into_iter().find(|v| v.path == ["c"]).unwrap();
    assert_eq!(c.offset, src.find("{{else if").unwrap());
}

// ---- compile errors ----

#[test]
fn syntax_errors_carry_offsets() {
    match Template::compile("abc {{ foo") {
        Err(TemplateError::Syntax { message, offset }) => {
            assert_eq!(offset, Some(10));
            assert!(
                message.contains("unclosed expression `{{ foo`"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    match Template::compile("x\n{{json a pretty=}}") {
        Err(TemplateError::Syntax { message, offset }) => {
            assert_eq!(offset, Some(18));
            assert!(message.contains("malformed expression"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match Template::compile("{{#if a}}x{{/each}}") {
        Err(TemplateError::Syntax { message, offset }) => {
            assert_eq!(offset, Some(10));
            assert!(message.contains("\"if\" was opened"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match Template::compile("{{#if a}}x") {
        Err(TemplateError::Syntax { message, offset }) => {
            assert_eq!(offset, Some(10));
            assert!(message.contains("not closed"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_and_misused_helpers_are_compile_errors() {
    match Template::compile("ab {{formatdate x \"%Y\"}}") {
        Err(TemplateError::Syntax { message, offset }) => {
            assert_eq!(offset, Some(3));
            assert_eq!(
                message,
                "unknown helper `formatdate`; did you mean `format_date`?"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Template::compile("{{#if a}}{{eq (nope b) 1}}{{/if}}"),
        Err(TemplateError::Syntax {
            offset: Some(9),
            ..
        })
    ));
    assert!(Template::compile("{{#json a}}x{{/json}}").is_err());
    assert!(Template::compile("{{if a}}").is_err());
    match Template::compile("{{#if a}}x{{else if}}y{{/if}}") {
        Err(TemplateError::Call {
            message, offset, ..
        }) => {
            assert_eq!(
                message,
                "`if` takes 1 parameter, got 0; usage: `{{#if VALUE}}`"
            );
            assert_eq!(offset, Some(10));
        }
        other => panic!("{other:?}"),
    }
    assert!(Template::compile("{{#each a b}}x{{/each}}").is_err());
    assert!(Template::compile("{{> partial}}").is_err());
    assert!(Template::compile("{{#*inline \"p\"}}x{{/inline}}").is_err());
    // odd input never panics
    for src in [
        "{{",
        "}}",
        "{{}}",
        "{{{{raw}}}}",
        "{{~else~}}",
        "{{#if}}{{/if}}",
        "{{^}}",
        "{{!",
    ] {
        let _ = Template::compile(src);
    }
}

// ---- helpers ----

#[test]
fn builtin_and_alias_comparisons() {
    let c = json!({"a": 2, "b": 3, "s": "x"});
    let check = |src: &str, expected: bool| {
        let t = Template::compile(src).unwrap();
        assert_eq!(t.render_value(&c).unwrap(), json!(expected), "{src}");
    };
    check("{{eq a 2}}", true);
    check("{{ne a b}}", true);
    check("{{lt a b}}", true);
    check("{{lte a 2}}", true);
    check("{{le a 1}}", false);
    check("{{ge b 3}}", true);
    check("{{gte a b}}", false);
    check("{{gt b a}}", true);
    check("{{and (eq s \"x\") (gt b a)}}", true);
    check("{{or false (ge a 3)}}", false);
    check("{{not (le a 1)}}", true);
    assert_eq!(
        Template::compile("{{#le a b}}yes{{else}}no{{/le}}")
            .unwrap()
            .render_string(&c)
            .unwrap(),
        "yes"
    );
    let names = helper_names();
    for n in [
        "eq",
        "ne",
        "gt",
        "gte",
        "lt",
        "lte",
        "le",
        "ge",
        "and",
        "or",
        "not",
        "len",
        "json",
        "default",
        "file",
        "duration_ms",
        "numbered",
    ] {
        assert!(names.contains(&n), "{n} missing from helper_names()");
    }
    assert!(!names.iter().any(|n| n.starts_with("__")));
}

#[test]
fn json_helper() {
    assert_eq!(
        render("{{json steps.create.body}}").unwrap(),
        r#"{"properties":{"status":"COMPLETED"}}"#
    );
    assert_eq!(
        render("{{json steps.create.body pretty=true}}").unwrap(),
        "{\n  \"properties\": {\n    \"status\": \"COMPLETED\"\n  }\n}"
    );
    assert_eq!(render("{{json inputs.domain}}").unwrap(), "\"example.com\"");
    assert_eq!(
        call_err("{{json inputs.count prety=true}}"),
        "`json` has no option `prety`; options: `pretty`; usage: `{{json VALUE [pretty=true|false]}}`"
    );
    assert_eq!(
        call_err("{{json}}"),
        "`json` takes 1 parameter, got 0; usage: `{{json VALUE [pretty=true|false]}}`"
    );
    assert!(
        call_err("{{json 1 pretty=\"yes\"}}").contains("option `pretty`: must be true or false")
    );
    // the same rule holds at render time for values that are not literals
    assert!(helper_err("{{json 1 pretty=inputs.domain}}")
        .1
        .contains("true or false"));
}

#[test]
fn encoding_helpers() {
    assert_eq!(
        render("{{base64 \"user:pa&ss\"}}").unwrap(),
        "dXNlcjpwYSZzcw=="
    );
    assert_eq!(
        render("{{base64_decode \"dXNlcjpwYSZzcw==\"}}").unwrap(),
        "user:pa&ss"
    );
    assert_eq!(
        render("{{base64_decode \"dXNlcjpwYSZzcw\"}}").unwrap(),
        "user:pa&ss"
    );
    assert_eq!(
        render("{{base64_decode (base64 inputs.amp)}}").unwrap(),
        "a&b<c>"
    );
    assert!(helper_err("{{base64_decode \"@@@\"}}")
        .1
        .contains("invalid base64"));
    assert!(helper_err("{{base64_decode \"//79\"}}").1.contains("UTF-8"));
    assert_eq!(
        helper_err("{{base64 steps}}").1,
        "parameter 1 must be a string, got an object"
    );
    assert_eq!(
        render("{{urlencode \"a b&c/d?e=é~x-y_z.\"}}").unwrap(),
        "a%20b%26c%2Fd%3Fe%3D%C3%A9~x-y_z."
    );
    assert_eq!(render("{{urlencode 42}}").unwrap(), "42");
}

#[test]
fn string_helpers() {
    assert_eq!(
        render("{{lower \"AbC\"}}{{upper \"aBc\"}}").unwrap(),
        "abcABC"
    );
    assert_eq!(render("[{{trim \"  x y \"}}]").unwrap(), "[x y]");
    assert_eq!(
        render("{{concat \"a\" inputs.count \"-\" inputs.flag inputs.nothing}}").unwrap(),
        "a3-true"
    );
    assert_eq!(
        render("{{join (split \"a,b,c\" \",\") \" | \"}}").unwrap(),
        "a | b | c"
    );
    assert_eq!(render("{{join (split \"a,b\" \",\")}}").unwrap(), "a,b");
    assert_eq!(
        value("{{split \"user@example.com\" \"@\"}}").unwrap(),
        json!(["user", "example.com"])
    );
    assert_eq!(
        helper_err("{{split \"a\" \"\"}}").1,
        "the separator must not be empty"
    );
    assert_eq!(
        helper_err("{{join inputs.domain}}").1,
        "parameter 1 must be an array, got a string"
    );
    assert!(call_err("{{lower}}").contains("`lower` takes 1 parameter, got 0"));
    assert!(call_err("{{concat}}").contains("takes at least 1 parameter, got 0"));
}

#[test]
fn contains_helper() {
    assert_eq!(
        value("{{contains inputs.domain \"example\"}}").unwrap(),
        json!(true)
    );
    assert_eq!(
        value("{{contains inputs.domain \"nope\"}}").unwrap(),
        json!(false)
    );
    assert_eq!(
        value("{{contains (split \"a,b\" \",\") \"b\"}}").unwrap(),
        json!(true)
    );
    assert_eq!(
        value("{{contains (split \"a,b\" \",\") \"c\"}}").unwrap(),
        json!(false)
    );
    let c = json!({"nums": [1, 2, 3], "m": {"k": 1}});
    let t =
        Template::compile("{{contains nums 2}} {{contains nums 5}} {{contains m \"k\"}}").unwrap();
    assert_eq!(t.render_string(&c).unwrap(), "true false true");
    assert!(helper_err("{{contains inputs.count 3}}")
        .1
        .contains("got a number"));
}

#[test]
fn file_helper() {
    let dir = std::env::temp_dir().join(format!("auditflow-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("query.xml"), "<q a=\"1\">&</q>").unwrap();
    std::fs::write(dir.join("bin"), [0xff, 0xfe, 0x00]).unwrap();
    let c = json!({"run": {"workflow_dir": dir.to_str().unwrap()}});
    let at = |name: &str| dir.join(name).display().to_string();
    let render_in = |src: &str| {
        // names are made absolute inside the temp dir; relative ones are tested below
        let src = src
            .replace("\"query.xml\"", &format!("\"{}\"", at("query.xml")))
            .replace("\"missing.txt\"", &format!("\"{}\"", at("missing.txt")))
            .replace("\"bin\"", &format!("\"{}\"", at("bin")))
            .replace("\"big\"", &format!("\"{}\"", at("big")));
        Template::compile(&src).unwrap().render_string(&c)
    };
    assert_eq!(
        render_in("{{file \"query.xml\"}}").unwrap(),
        "<q a=\"1\">&</q>"
    );
    // beside the workflow, through run.workflow_dir
    assert_eq!(
        Template::compile("{{file (concat run.workflow_dir \"/query.xml\")}}")
            .unwrap()
            .render_string(&c)
            .unwrap(),
        "<q a=\"1\">&</q>"
    );
    // absolute
    let abs = dir.join("query.xml");
    let src = format!("{{{{file \"{}\"}}}}", abs.display());
    assert_eq!(render_in(&src).unwrap(), "<q a=\"1\">&</q>");
    match render_in("{{file \"missing.txt\"}}") {
        Err(TemplateError::Helper { helper, message }) => {
            assert_eq!(helper, "file");
            assert!(
                message.contains("cannot read") && message.contains("missing.txt"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(render_in("{{file \"bin\"}}"), Err(TemplateError::Helper { message, .. }) if message.contains("UTF-8"))
    );
    // over the size limit
    let big = dir.join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(helpers::FILE_LIMIT + 1).unwrap();
    match render_in("{{file \"big\"}}") {
        Err(TemplateError::Helper { message, .. }) => {
            assert!(message.contains("16 MiB"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // relative names: the working directory, even when run.workflow_dir is set
    let cwd_rel = Template::compile("{{file \"Cargo.toml\"}}").unwrap();
    assert!(cwd_rel.render_string(&c).unwrap().contains("[package]"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn date_helpers_with_fixed_dates() {
    assert_eq!(
        render("{{date_add \"2024-03-01 00:00\" \"-1d\"}}").unwrap(),
        "2024-02-29T00:00:00Z"
    );
    assert_eq!(
        render("{{date_add \"2023-03-01\" \"-1d\"}}").unwrap(),
        "2023-02-28T00:00:00Z"
    );
    assert_eq!(
        render("{{date_add \"2024-01-31T23:00:00Z\" \"2h\"}}").unwrap(),
        "2024-02-01T01:00:00Z"
    );
    assert_eq!(
        render("{{date_add \"2024-01-01T10:00:00+02:00\" \"+30m\"}}").unwrap(),
        "2024-01-01T10:30:00+02:00"
    );
    assert_eq!(
        render("{{date_add run.started_at \"-7d\"}}").unwrap(),
        "2024-02-23T00:00:00Z"
    );
    assert_eq!(
        render("{{format_date \"2024-03-01T12:34:56Z\" \"%Y-%m-%d %H:%M\"}}").unwrap(),
        "2024-03-01 12:34"
    );
    assert_eq!(
        render("{{format_date \"2024-03-01 12:34\" \"%Y-%m-%dT%H:%M:%S%z\"}}").unwrap(),
        "2024-03-01T12:34:00+0000"
    );
    assert_eq!(
        render("{{format_date (date_add \"2024-03-01\" \"-1d\") \"%Y-%m-%d\"}}").unwrap(),
        "2024-02-29"
    );
    assert_eq!(
        render("{{format_date \"2024-03-01T00:00:00+0000\" \"%d/%m/%Y\"}}").unwrap(),
        "01/03/2024"
    );
    let (h, m) = helper_err("{{format_date inputs.domain \"%Y\"}}");
    assert_eq!(h, "format_date");
    assert_eq!(
        m,
        "cannot parse date `example.com`; expected RFC 3339 or YYYY-MM-DD HH:MM"
    );
    assert_eq!(
        render("{{format_date inputs.domain \"%Y\"}}")
            .unwrap_err()
            .to_string(),
        "format_date: cannot parse date `example.com`; expected RFC 3339 or YYYY-MM-DD HH:MM"
    );
    // literals are checked when compiling
    assert_eq!(
        call_err("{{format_date \"xyz\" \"%Y\"}}"),
        "`format_date` parameter 1 (DATE): cannot parse date `xyz`; expected RFC 3339 or \
         YYYY-MM-DD HH:MM; usage: `{{format_date DATE FORMAT}}`"
    );
    assert!(call_err("{{format_date \"2024-03-01\" \"%Q\"}}").contains("invalid date format"));
    assert!(
        helper_err("{{format_date \"2024-03-01\" (concat \"%\" \"Q\")}}")
            .1
            .contains("invalid date format")
    );
    assert!(call_err("{{date_add \"2024-03-01\" \"soon\"}}").contains("invalid duration `soon`"));
    assert!(helper_err("{{date_add \"2024-03-01\" inputs.domain}}")
        .1
        .contains("invalid duration `example.com`"));
    assert!(helper_err("{{date_add \"2024-01-01\" \"20000000w\"}}")
        .1
        .contains("out of range"));
}

#[test]
fn relative_time_helpers() {
    let parse = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let secs =
        |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| (a - b).num_seconds();
    let now = chrono::Utc::now();
    let rendered_now = parse(&render("{{now}}").unwrap());
    assert!(secs(rendered_now, now).abs() <= 2);
    assert!(render("{{now}}").unwrap().ends_with('Z'));
    let ago = parse(&render("{{ago \"7d\"}}").unwrap());
    assert!((secs(now, ago) - 7 * 86_400).abs() <= 2);
    let later = parse(&render("{{from_now \"2h\"}}").unwrap());
    assert!((secs(later, now) - 7_200).abs() <= 2);
    assert!(call_err("{{ago \"seven days\"}}").contains("invalid duration `seven days`"));
    assert!(call_err("{{now 1}}").contains("`now` takes 0 parameters, got 1"));
}

#[test]
fn duration_ms_helper() {
    assert_eq!(value("{{duration_ms \"200ms\"}}").unwrap(), json!(200));
    assert_eq!(value("{{duration_ms \"30s\"}}").unwrap(), json!(30_000));
    assert_eq!(value("{{duration_ms \"7d\"}}").unwrap(), json!(604_800_000));
    assert_eq!(
        value("{{duration_ms \"1h 30m\"}}").unwrap(),
        json!(5_400_000)
    );
    assert_eq!(value("{{duration_ms \"-5m\"}}").unwrap(), json!(-300_000));
    assert!(call_err("{{duration_ms \"5 parsecs\"}}").starts_with("`duration_ms` parameter 1"));
    assert_eq!(helper_err("{{duration_ms inputs.domain}}").0, "duration_ms");
}

// ---- deep helpers ----

#[test]
fn render_deep_renders_strings_and_keeps_keys() {
    let body = json!({
        "{{item}}": "key untouched",
        "ids": "{{ steps.list.body.entries }}",
        "query": {"domain": "{{inputs.domain}}", "n": 5, "path": "/u/{{item}}", "list": ["{{index}}", true, null]}
    });
    let out = render_deep(&body, &ctx()).unwrap();
    assert_eq!(
        out,
        json!({
            "{{item}}": "key untouched",
            "ids": [{"id": "u1", "name": "Ann"}, {"id": "u2", "name": "Bob"}],
            "query": {"domain": "example.com", "n": 5, "path": "/u/u1", "list": [0, true, null]}
        })
    );
    assert!(matches!(
        render_deep(&json!({"a": ["{{nope}}"]}), &ctx()),
        Err(TemplateError::UndefinedVariable { path, .. }) if path == "nope"
    ));
}

#[test]
fn compiled_values_report_locations() {
    let v = json!({"a": {"b": ["x", "{{inputs.y}}"]}, "c": 1, "d": "{{d}}"});
    let compiled = TplValue::compile(&v).unwrap();
    let templates = compiled.templates();
    let locs: Vec<&str> = templates.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(locs, ["a.b[0]", "a.b[1]", "d"]);
    assert_eq!(
        templates[1].1.template().variables()[0].path,
        ["inputs", "y"]
    );
    let (at, err) = TplValue::compile(&json!({"steps": [{"path": "{{ bad"}]})).unwrap_err();
    assert_eq!(at, "steps[0].path");
    assert!(matches!(err, TemplateError::Syntax { .. }));
    assert_eq!(
        TplValue::compile(&json!("top")).unwrap().templates()[0].0,
        ""
    );
}

#[test]
fn a_compiled_value_renders_like_render_deep_every_time() {
    let body =
        json!({"ids": "{{ steps.list.body.entries }}", "q": ["{{index}}", "/u/{{item}}", 5]});
    let compiled = TplValue::compile(&body).unwrap();
    for _ in 0..2 {
        assert_eq!(
            compiled.render(&ctx()).unwrap(),
            render_deep(&body, &ctx()).unwrap()
        );
    }
}

#[test]
fn templates_are_reusable_and_cloneable() {
    let t =
        Template::compile("{{#each steps.list.body.entries}}{{id}}:{{@index}} {{/each}}").unwrap();
    let t2 = t.clone();
    for _ in 0..3 {
        assert_eq!(t2.render_string(&ctx()).unwrap(), "u1:0 u2:1 ");
    }
    assert!(format!("{t:?}").contains("each"));
}

#[test]
fn numbered_collects_file_urls_in_numeric_order() {
    let ctx = serde_json::json!({"p": {"status": "COMPLETED", "fileUrl10": "k", "fileUrl2": "c", "fileUrl0": "a", "fileUrl1": "b", "fileUrlx": "no"}});
    let t = Template::compile(r#"{{ numbered p "fileUrl" }}"#).unwrap();
    assert_eq!(
        t.render_value(&ctx).unwrap(),
        serde_json::json!(["a", "b", "c", "k"])
    );
    let t = Template::compile(r#"{{ numbered p.status "x" }}"#).unwrap();
    assert!(t.render_value(&ctx).is_err());
}

#[test]
fn filter_selects_the_records_that_match() {
    let ctx = serde_json::json!({"r": {"data": [
        {"id": 1, "size": 10, "meta": {"route": "inbound"}, "tags": ["spam"]},
        {"id": 2, "size": 200, "meta": {"route": "outbound"}, "tags": []},
        {"id": 3, "size": "30", "meta": {"route": "inbound"}}
    ]}});
    let ids = |src: &str| {
        let t = Template::compile(&format!("{{{{ pluck ({src}) \"id\" }}}}")).unwrap();
        t.render_value(&ctx).unwrap()
    };
    assert_eq!(
        ids(r#"filter r.data "meta.route" "inbound""#),
        json!([1, 3])
    );
    assert_eq!(ids(r#"filter r.data "size" 30 op="ge""#), json!([2, 3]));
    assert_eq!(ids(r#"filter r.data "size" 30 op="lt""#), json!([1]));
    assert_eq!(
        ids(r#"filter r.data "tags" "spam" op="contains""#),
        json!([1])
    );
    assert_eq!(
        ids(r#"filter r.data "meta.route" "inbound" op="ne""#),
        json!([2])
    );
    assert_eq!(ids(r#"filter r.data "nothing" 1"#), json!([]));
    let t = Template::compile(r#"{{ filter r.data "id" 1 op="like" }}"#).unwrap();
    let e = t.render_value(&ctx).unwrap_err().to_string();
    assert!(e.contains("op=\"like\" is not one of eq, ne"), "{e}");
}

// ---- helper signatures, checked when compiling ----

#[test]
fn every_helper_has_a_signature() {
    for name in helper_names() {
        assert!(helpers::signature(name).is_some(), "{name}");
    }
}

#[test]
fn wrong_arity_is_a_compile_error_naming_the_helper_and_its_usage() {
    assert_eq!(
        call_err("{{ format_date }}"),
        "`format_date` takes 2 parameters, got 0; usage: `{{format_date DATE FORMAT}}`"
    );
    assert_eq!(
        call_err("{{ eq 1 }}"),
        "`eq` takes 2 parameters, got 1; usage: `{{eq A B}}`"
    );
    assert_eq!(
        call_err("{{ date_add (now) 1 2 3 4 }}"),
        "`date_add` takes 2 parameters, got 5; usage: `{{date_add DATE DURATION}}`"
    );
    assert_eq!(
        call_err("{{ join }}"),
        "`join` takes 1 to 2 parameters, got 0; usage: `{{join LIST [SEPARATOR]}}`"
    );
    assert!(call_err("{{ and inputs.flag }}").contains("takes at least 2 parameters, got 1"));
    assert!(call_err("{{ default inputs.x }}").contains("usage: `{{default VALUE FALLBACK...}}`"));
}

#[test]
fn nested_calls_and_blocks_are_checked_too() {
    // a subexpression deep inside, reported at the enclosing expression
    match Template::compile("a {{ concat \"x\" (upper (lower)) }}") {
        Err(TemplateError::Call { helper, offset, .. }) => {
            assert_eq!(helper, "lower");
            assert_eq!(offset, Some(2));
        }
        other => panic!("{other:?}"),
    }
    assert!(call_err("{{#eq inputs.domain}}x{{/eq}}").contains("usage: `{{#eq A B}}`"));
    assert!(call_err("{{#if inputs.flag}}{{ upper }}{{/if}}").contains("`upper` takes 1"));
    assert!(call_err("{{#if inputs.flag}}x{{else}}{{ ago 5 }}{{/if}}")
        .contains("`ago` parameter 1 (DURATION): invalid duration `5`"));
    assert!(call_err("{{#each (split inputs.domain)}}x{{/each}}").contains("`split` takes 2"));
}

#[test]
fn literal_arguments_of_the_wrong_kind_are_compile_errors() {
    assert!(call_err("{{ len 5 }}").contains("must be a string, a list or an object, got a number"));
    assert!(call_err("{{ join \"a,b\" }}").contains("`join` parameter 1 (LIST): must be a list"));
    assert!(call_err("{{ ago \"30M\" }}").contains("unknown unit `M`"));
    assert!(call_err("{{ numbered \"x\" \"fileUrl\" }}").contains("must be an object"));
    assert!(call_err("{{ upper [1] }}").contains("must be text, got an array"));
    // paths and subexpressions are only known when rendering
    assert!(Template::compile("{{ len inputs.count }}").is_ok());
    assert!(Template::compile("{{ ago (concat inputs.count \"d\") }}").is_ok());
    assert_eq!(
        render("{{ ago (concat \"3\" \"x\") }}")
            .unwrap_err()
            .to_string()
            .split(':')
            .next(),
        Some("ago")
    );
}
