//! The checked-in contract must be exactly what the code generates (`make openapi` fixes it).

#[test]
fn checked_in_spec_matches_the_code() {
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../openapi/openapi.json"
    ))
    .expect("openapi/openapi.json is missing: run `make openapi`");
    let generated = itsm_api::openapi::spec_json();
    assert!(
        checked_in == generated,
        "openapi/openapi.json is out of date: run `make openapi` and commit the result"
    );
}

#[test]
fn spec_is_openapi_3_1_with_bearer_security() {
    let spec: serde_json::Value = serde_json::from_str(&itsm_api::openapi::spec_json()).unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let operation_ids: Vec<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    let mut unique = operation_ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        operation_ids.len(),
        "operation ids must be unique"
    );
}
