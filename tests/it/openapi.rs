//! The committed `openapi/openapi.json` is exactly what the service serves. Regenerate it with
//! `cargo run -- openapi > openapi/openapi.json`.

use crate::harness::TestApp;

#[tokio::test]
async fn committed_spec_matches_the_served_one() {
    let t = TestApp::new();
    let r = t
        .call(axum::http::Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    let served = r.body;
    let generated: serde_json::Value =
        serde_json::from_str(&secret_broker::api::openapi_json()).unwrap();
    assert_eq!(
        served, generated,
        "the served spec differs from the generated one"
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == secret_broker::api::openapi_json(),
        "openapi/openapi.json is out of date: run `cargo run -- openapi > openapi/openapi.json` and commit it"
    );
}

#[tokio::test]
async fn every_operation_documents_its_errors_as_problems() {
    let spec = secret_broker::api::openapi();
    for (path, item) in &spec.paths.paths {
        for op in [&item.get, &item.post].into_iter().flatten() {
            assert!(
                op.description.is_some() || op.summary.is_some(),
                "{path} has no summary"
            );
            if path.starts_with("/v1/") {
                assert!(
                    op.responses.responses.contains_key("401"),
                    "{path} does not document 401"
                );
            }
        }
    }
}

#[tokio::test]
async fn swagger_ui_is_served_offline() {
    let t = TestApp::new();
    let r = t.call(axum::http::Method::GET, "/docs/", None, None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text.contains("swagger"),
        "{}",
        &r.text[..r.text.len().min(200)]
    );
}
