//! Unit tests of `validate`.
use super::*;
use serde_json::json;

#[test]
fn coerces_inputs_from_the_command_line() {
    assert_eq!(
        coerce_input(InputType::Integer, &json!("42")),
        Ok(json!(42))
    );
    assert_eq!(
        coerce_input(InputType::Boolean, &json!("yes")),
        Ok(json!(true))
    );
    assert_eq!(
        coerce_input(InputType::List, &json!("1, 2")),
        Ok(json!(["1", "2"]))
    );
    assert_eq!(
        coerce_input(InputType::List, &json!("[1,2]")),
        Ok(json!([1, 2]))
    );
    assert_eq!(
        coerce_input(InputType::Duration, &json!("200ms")),
        Ok(json!("200ms"))
    );
    assert!(coerce_input(InputType::Duration, &json!("soon")).is_err());
    assert!(coerce_input(InputType::Integer, &json!("x"))
        .unwrap_err()
        .contains("not an integer"));
    assert!(coerce_input(InputType::List, &json!({"a": 1}))
        .unwrap_err()
        .contains("a mapping"));
}

#[test]
fn identifiers() {
    assert!(valid_ident("create-export"));
    assert!(valid_ident("_x1"));
    assert!(!valid_ident("1x"));
    assert!(!valid_ident("a.b"));
    assert!(!valid_ident(""));
}
