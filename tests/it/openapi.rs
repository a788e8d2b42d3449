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

/// Every string a client sends (path, query, body, array items) has a declared bound: maxLength, an
/// enum, or a date-time/uuid format. A new field without one fails here; the handlers enforce the
/// bound (schemathesis's negative_data_rejection check holds them to it).
#[test]
fn every_string_input_is_bounded() {
    let spec: serde_json::Value =
        serde_json::from_str(&secret_broker::api::openapi_json()).unwrap();
    let comps = &spec["components"]["schemas"];
    fn walk(s: &serde_json::Value, comps: &serde_json::Value, path: String, out: &mut Vec<String>) {
        let s = match s["$ref"].as_str() {
            Some(r) => &comps[r.rsplit('/').next().unwrap()],
            None => s,
        };
        for k in ["oneOf", "anyOf", "allOf"] {
            for x in s[k].as_array().into_iter().flatten() {
                walk(x, comps, path.clone(), out);
            }
        }
        let is_string = match &s["type"] {
            serde_json::Value::String(t) => t == "string",
            serde_json::Value::Array(ts) => ts.iter().any(|t| t == "string"),
            _ => false,
        };
        if is_string
            && s.get("maxLength").is_none()
            && s.get("enum").is_none()
            && !matches!(s["format"].as_str(), Some("date-time" | "uuid"))
        {
            out.push(path.clone());
        }
        if let Some(props) = s["properties"].as_object() {
            for (k, v) in props {
                walk(v, comps, format!("{path}.{k}"), out);
            }
        }
        if s.get("items").is_some() {
            walk(&s["items"], comps, format!("{path}[]"), out);
        }
    }
    let mut unbounded = Vec::new();
    for (p, item) in spec["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            for prm in op["parameters"].as_array().into_iter().flatten() {
                let name = prm["name"].as_str().unwrap();
                walk(
                    &prm["schema"],
                    comps,
                    format!("{m} {p} {name}"),
                    &mut unbounded,
                );
            }
            for (_, c) in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
            {
                walk(&c["schema"], comps, format!("{m} {p} body"), &mut unbounded);
            }
        }
    }
    assert!(
        unbounded.is_empty(),
        "string inputs without a declared bound:\n{}",
        unbounded.join("\n")
    );
}

/// Every ARN input (`arn`, `*_arn`, and the ARN lists of an access review) declares the one limit the
/// handlers check, `policy::arn::MAX_ARN_LEN` (utoipa's attributes take only literals, so the number is
/// written in each; this keeps them equal).
#[test]
fn every_arn_input_has_the_one_arn_length_limit() {
    use secret_broker::policy::arn::MAX_ARN_LEN;
    let spec: serde_json::Value =
        serde_json::from_str(&secret_broker::api::openapi_json()).unwrap();
    let comps = &spec["components"]["schemas"];
    let resolve = |s: &'_ serde_json::Value| -> serde_json::Value {
        match s["$ref"].as_str() {
            Some(r) => comps[r.rsplit('/').next().unwrap()].clone(),
            None => s.clone(),
        }
    };
    let is_arn = |name: &str| name == "arn" || name.ends_with("_arn");
    let mut seen = Vec::new();
    let mut check = |what: String, s: &serde_json::Value| {
        let s = if s.get("items").is_some() {
            &s["items"]
        } else {
            s
        };
        assert_eq!(
            s["maxLength"].as_u64(),
            Some(MAX_ARN_LEN as u64),
            "{what}: {s}"
        );
        seen.push(what);
    };
    for (p, item) in spec["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            for prm in op["parameters"].as_array().into_iter().flatten() {
                let name = prm["name"].as_str().unwrap();
                if is_arn(name) {
                    check(format!("{m} {p} {name}"), &prm["schema"]);
                }
            }
            for (_, c) in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
            {
                let body = resolve(&c["schema"]);
                for (k, v) in body["properties"].as_object().into_iter().flatten() {
                    if is_arn(k) || matches!(k.as_str(), "secrets" | "principals") {
                        check(format!("{m} {p} body.{k}"), &resolve(v));
                    }
                }
            }
        }
    }
    assert!(seen.len() >= 6, "only {seen:?}");
}

/// Every ARN pattern in the document is the one next to its parser: `SECRET_ARN_PATTERN` for a secret,
/// `PRINCIPAL_ARN_PATTERN` for a principal (utoipa's attributes take only literals, so each is written
/// where it is used; this keeps them equal, as the test above does for `MAX_ARN_LEN`).
#[test]
fn every_arn_pattern_is_the_one_next_to_its_parser() {
    use secret_broker::policy::arn::{PRINCIPAL_ARN_PATTERN, SECRET_ARN_PATTERN};
    let spec: serde_json::Value =
        serde_json::from_str(&secret_broker::api::openapi_json()).unwrap();
    fn walk(path: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if k == "pattern"
                        && let Some(p) = x.as_str()
                    {
                        out.push((path.to_owned(), p.to_owned()));
                    }
                    walk(&format!("{path}/{k}"), x, out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(&format!("{path}/{i}"), x, out);
                }
            }
            _ => {}
        }
    }
    let mut patterns = Vec::new();
    walk("", &spec, &mut patterns);
    let (mut secrets, mut principals) = (0, 0);
    for (path, p) in &patterns {
        if p.contains(":secretsmanager:") {
            assert_eq!(p, SECRET_ARN_PATTERN, "{path}");
            secrets += 1;
        } else if p.contains(":iam::") {
            assert_eq!(p, PRINCIPAL_ARN_PATTERN, "{path}");
            principals += 1;
        }
    }
    // CreateShare and AccessCheck name a secret; those two and CreatePrincipal a principal.
    assert!(secrets >= 2 && principals >= 3, "{patterns:?}");
}
