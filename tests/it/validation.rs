//! Bad input gets a 4xx problem+json that names what is wrong, and writes nothing (but the refusal's
//! audit row, where one applies).

use axum::body::Body;
use axum::http::{Method, Request};
use secret_broker::domain::Role::*;
use serde_json::json;

use crate::harness::{ROLE, SECRET, TestApp};

fn snapshot(t: &TestApp) -> [i64; 4] {
    [
        t.count("shares"),
        t.count("principals"),
        t.count("approvals"),
        t.count("audit"),
    ]
}

#[tokio::test]
async fn each_bad_share_field_is_named() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let before = snapshot(&t);
    let ok = json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "x"});
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            json!({"secret_arn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db"}),
            "secret_arn",
            "6-character suffix",
        ),
        (
            json!({"secret_arn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/*"}),
            "secret_arn",
            "wildcards",
        ),
        (
            json!({"secret_arn": "x".repeat(5000)}),
            "secret_arn",
            "2048",
        ),
        (json!({"principal_arn": "*"}), "principal_arn", "wildcards"),
        (
            json!({"principal_arn": "arn:aws:iam::444455556666:role/*"}),
            "principal_arn",
            "wildcards",
        ),
        (
            json!({"principal_arn": "ec2.amazonaws.com"}),
            "principal_arn",
            "service principals",
        ),
        (
            json!({"principal_arn": "arn:aws:iam::111122223333:role/same-account"}),
            "principal_arn",
            "own account",
        ),
        (
            json!({"principal_arn": "arn:aws-cn:iam::444455556666:root"}),
            "principal_arn",
            "partition",
        ),
        (json!({"justification": ""}), "justification", "required"),
        (
            json!({"justification": "x".repeat(2001)}),
            "justification",
            "2000",
        ),
        (
            json!({"version_stage": "AWS CURRENT"}),
            "version_stage",
            "staging label",
        ),
        (
            json!({"actions": ["secretsmanager:PutSecretValue"]}),
            "actions",
            "read actions",
        ),
        (
            json!({"actions": ["secretsmanager:*"]}),
            "actions",
            "read actions",
        ),
        (
            json!({"actions": ["secretsmanager:DescribeSecret"]}),
            "actions",
            "must include secretsmanager:GetSecretValue",
        ),
        (json!({"actions": []}), "actions", "must include"),
        (json!({"expires_at": "tomorrow"}), "expires_at", "RFC 3339"),
        (
            json!({"expires_at": "2026-11-28T00:00:00Z"}),
            "expires_at",
            "future",
        ),
        (
            json!({"expires_at": "2027-02-27T12:00:01Z"}),
            "expires_at",
            "at most 90d",
        ),
    ];
    for (patch, field, needle) in cases {
        let mut body = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = t.post("/v1/shares", &alice, body).await.expect(422);
        let errors = r.body["errors"].as_array().unwrap();
        let e = errors
            .iter()
            .find(|e| e["field"] == field)
            .unwrap_or_else(|| panic!("no error for {field}: {}", r.text));
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{field}: {}",
            r.text
        );
    }
    // Missing and unknown fields, wrong types: the schema's own words.
    for (body, needle) in [
        (
            json!({"secret_arn": SECRET, "principal_arn": ROLE}),
            "justification",
        ),
        (
            json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "x", "approver": "me"}),
            "approver",
        ),
        (
            json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": 5}),
            "string",
        ),
        (json!([1, 2]), "JSON object"),
    ] {
        let r = t.post("/v1/shares", &alice, body).await.expect(422);
        assert!(r.text.contains(needle), "{}", r.text);
    }
    assert_eq!(snapshot(&t), before, "refused requests wrote nothing");
}

#[tokio::test]
async fn several_errors_are_reported_together() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let r = t
        .post(
            "/v1/shares",
            &alice,
            json!({"secret_arn": "nope", "principal_arn": "*", "justification": ""}),
        )
        .await
        .expect(422);
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["secret_arn", "principal_arn", "justification"]);
}

/// Both ARN fields of an access check are parsed while the body is read, and both bad ones are named
/// in one 422 (a too-long one refused unparsed, the other with what a valid value looks like).
#[tokio::test]
async fn two_bad_arn_fields_get_one_answer_naming_both() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let before = snapshot(&t);
    let r = t
        .post(
            "/v1/access-checks",
            &alice,
            json!({"principal_arn": "*", "secret_arn": "x".repeat(5000)}),
        )
        .await
        .expect(422);
    assert_eq!(
        r.body["type"].as_str().map(|s| s.ends_with("validation")),
        Some(true),
        "{}",
        r.text
    );
    let errors = r.body["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["principal_arn", "secret_arn"], "{}", r.text);
    assert!(
        errors[1]["message"].as_str().unwrap().contains("2048"),
        "{}",
        r.text
    );
    assert_eq!(snapshot(&t), before, "refused requests wrote nothing");
}

#[tokio::test]
async fn unreadable_bodies() {
    let t = TestApp::with(|c| c.max_body_bytes.0 = 1024);
    let alice = t.token("alice", Requester).await;
    let before = snapshot(&t);
    let send = |ct: Option<&str>, body: Vec<u8>| {
        let mut b = Request::post("/v1/shares").header("authorization", format!("Bearer {alice}"));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(body)).unwrap()
    };
    let r = t
        .raw(send(Some("application/json"), b"{not json".to_vec()))
        .await
        .expect(400);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let r = t
        .raw(send(Some("text/plain"), b"{}".to_vec()))
        .await
        .expect(415);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("application/json")
    );
    t.raw(send(None, b"{}".to_vec())).await.expect(415);
    let big = format!(r#"{{"justification":"{}"}}"#, "x".repeat(4096));
    let r = t
        .raw(send(Some("application/json"), big.into_bytes()))
        .await
        .expect(413);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes")
    );
    // The same for a principal and an approval.
    let big = format!(r#"{{"arn":"{}"}}"#, "x".repeat(4096));
    let r = t
        .raw(
            Request::post("/v1/principals")
                .header("authorization", format!("Bearer {alice}"))
                .header("content-type", "application/json")
                .body(Body::from(big))
                .unwrap(),
        )
        .await;
    r.expect(413);
    assert_eq!(snapshot(&t), before);
}

#[tokio::test]
async fn unauthenticated_bad_bodies_are_401_not_422() {
    let t = TestApp::new();
    let r = t
        .call(
            Method::POST,
            "/v1/shares",
            None,
            Some(json!({"secret_arn": "nope"})),
        )
        .await
        .expect(401);
    assert!(r.body["detail"].as_str().unwrap().contains("Authorization"));
    // The refused attempt is audited, by an anonymous actor, with what it tried.
    let (actor, action, details) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("anonymous", "auth.failed")
    );
    assert_eq!(details["reason"], "no-token");
    assert_eq!(details["method"], "POST");
    assert_eq!(details["route"], "/v1/shares");
    assert_eq!(details["address"], "127.0.0.1");
    assert_eq!(t.count("shares"), 0);
}

#[tokio::test]
async fn principals_are_validated_and_unique() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    for (arn, needle) in [
        ("*", "wildcards"),
        ("arn:aws:iam::444455556666:user/*", "wildcards"),
        ("lambda.amazonaws.com", "service principals"),
        ("arn:aws:iam::4444:root", "12 digits"),
        ("arn:aws:sts::444455556666:assumed-role/r/s", "STS"),
        ("arn:aws:iam::444455556666:group/g", "cannot be a principal"),
    ] {
        let r = t
            .post("/v1/principals", &alice, json!({"arn": arn}))
            .await
            .expect(422);
        assert_eq!(r.body["errors"][0]["field"], "arn");
        let msg = r.body["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{arn}: {msg}");
        assert!(
            msg.contains("arn:aws:iam::444455556666:role/app-reader"),
            "says what a valid value looks like: {msg}"
        );
    }
    let r = t
        .post(
            "/v1/principals",
            &alice,
            json!({"arn": "arn:aws:iam::444455556666:role/team/a/app", "description": "team app"}),
        )
        .await
        .expect(201);
    assert_eq!(r.body["kind"], "role");
    assert_eq!(r.body["account_id"], "444455556666");
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.headers["location"], format!("/v1/principals/{id}"));
    let r = t
        .post(
            "/v1/principals",
            &alice,
            json!({"arn": "arn:aws:iam::444455556666:role/team/a/app"}),
        )
        .await
        .expect(409);
    assert_eq!(r.body["existing_id"], id.as_str());
    let r = t
        .get(&format!("/v1/principals/{id}"), &alice)
        .await
        .expect(200);
    assert_eq!(r.body["description"], "team app");
    t.get("/v1/principals/nope", &alice).await.expect(404);
    for arn in [
        "arn:aws-us-gov:iam::444455556666:user/ci/deployer",
        "arn:aws-cn:iam::444455556666:root",
        "999988887777",
    ] {
        t.post("/v1/principals", &alice, json!({"arn": arn}))
            .await
            .expect(201);
    }
    let r = t
        .post("/v1/principals", &alice, json!({"arn": "999988887777"}))
        .await
        .expect(409);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("arn:aws:iam::999988887777:root")
    );
    assert_eq!(t.count("principals"), 4);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    t.get("/v2/nothing", &alice).await.expect(404);
    let r = t
        .call(Method::DELETE, "/v1/shares", Some(&alice), None)
        .await
        .expect(405);
    assert!(r.headers.contains_key("allow"));
}

#[tokio::test]
async fn responses_carry_request_ids_and_safe_headers() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let r = t
        .raw(
            Request::get("/v1/shares")
                .header("authorization", format!("Bearer {alice}"))
                .header("x-request-id", "req-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .expect(200);
    assert_eq!(r.headers["x-request-id"], "req-123");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert_eq!(r.headers["referrer-policy"], "no-referrer");
    let r = t.get("/v1/shares", &alice).await;
    assert!(
        !r.headers["x-request-id"].is_empty(),
        "generated when absent"
    );
    // The request id reaches the audit row.
    let r = t
        .raw(
            Request::post("/v1/shares")
                .header("authorization", format!("Bearer {alice}"))
                .header("content-type", "application/json")
                .header("x-request-id", "req-456")
                .body(Body::from(
                    json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "x"})
                        .to_string(),
                ))
                .unwrap(),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let rid: String = t
        .db()
        .query_row(
            "SELECT request_id FROM audit WHERE share_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rid, "req-456");
}

/// Access checks refuse what can never be granted (other partitions, regions that do not exist), and
/// bad guardrail documents, before any AWS call
/// (this app has no AWS access configured: a check that got that far would fail otherwise).
#[tokio::test]
async fn access_checks_refuse_other_partitions_unknown_regions_and_bad_guardrails() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let cn_secret =
        "arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:prod/db-password-AbCdEf";
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        // Partitions are isolated: a bare account id is read as aws, and the message says what to give.
        (
            json!({"principal_arn": "444455556666", "secret_arn": cn_secret}),
            "principal_arn",
            "arn:aws-cn:iam::444455556666:root",
        ),
        (
            json!({"principal_arn": "arn:aws-us-gov:iam::444455556666:role/app", "secret_arn": SECRET}),
            "principal_arn",
            "partitions are isolated",
        ),
        (
            json!({"principal_arn": ROLE, "secret_arn": cn_secret}),
            "principal_arn",
            "partitions are isolated",
        ),
        // A region that does not exist in the ARN's partition is the caller's error, not AWS's (a
        // schemathesis run got 5xx for these two: the SDK could not resolve a host for them).
        (
            json!({"principal_arn": "arn:aws-us-gov:iam::444455556666:role/app",
                   "secret_arn": "arn:aws-us-gov:secretsmanager:rq-bqklz-u-82:111122223333:secret:x-AbCdEf"}),
            "secret_arn",
            "does not exist in partition aws-us-gov",
        ),
        (
            json!({"principal_arn": ROLE,
                   "secret_arn": "arn:aws:secretsmanager:yu-bmm-08:111122223333:secret:x-AbCdEf"}),
            "secret_arn",
            "does not exist in partition aws",
        ),
        (
            json!({"principal_arn": ROLE, "secret_arn": SECRET, "action": "secretsmanager:PutSecretValue"}),
            "action",
            "cannot be shared",
        ),
        (
            json!({"principal_arn": ROLE, "secret_arn": SECRET, "permissions_boundary": {"Statement": [{"Effect": "Allow"}]}}),
            "permissions_boundary",
            "Action",
        ),
        (
            json!({"principal_arn": ROLE, "secret_arn": SECRET, "service_control_policies": [{"Statement": []}, {"Statement": "x"}]}),
            "service_control_policies[1]",
            "",
        ),
        (
            json!({"principal_arn": ROLE, "secret_arn": SECRET, "resource_control_policies": vec![json!({"Statement": []}); 11]}),
            "resource_control_policies",
            "at most 10",
        ),
    ];
    for (body, field, text) in cases {
        let r = t
            .post("/v1/access-checks", &alice, body.clone())
            .await
            .expect(422);
        let errors = &r.body["errors"];
        assert!(
            errors
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field && e["message"].as_str().unwrap().contains(text)),
            "{body}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn a_required_text_needs_a_visible_character_and_no_control_character() {
    // Review finding (issue 21): `{"reason": "\u200b"}` and `{"reason": "\u0000\u0007"}` passed, and a
    // NUL in a justification reached the database (PostgreSQL refuses it in text: a 500).
    let t = TestApp::with(|c| {
        c.break_glass_roles = secret_broker::config::RoleList(vec![Requester]);
    });
    let alice = t.token("alice", Requester).await;
    let before = snapshot(&t);
    for (text, says) in [
        ("\u{0}", "control"),
        ("bad\u{0}justification", "control"),
        ("\u{7}", "control"),
        ("\u{200b}", "visible"),
        (" \u{feff}\u{2060}\t\n", "visible"),
    ] {
        let r = t
            .post(
                "/v1/shares",
                &alice,
                json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": text}),
            )
            .await
            .expect(422);
        assert_eq!(r.body["errors"][0]["field"], "justification", "{text:?}");
        assert!(r.text.contains(says), "{text:?}: {}", r.text);
    }
    assert_eq!(snapshot(&t), before);
    let id = t
        .post(
            "/v1/shares",
            &alice,
            json!({"secret_arn": SECRET, "principal_arn": ROLE,
                   "justification": "line one\n\tline two \u{1f468}\u{200d}\u{1f4bb}"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for reason in ["\u{200b}", "\u{0}\u{7}", "\u{3164}"] {
        let r = t
            .post(
                &format!("/v1/shares/{id}/break-glass"),
                &alice,
                json!({"reason": reason}),
            )
            .await
            .expect(422);
        assert_eq!(r.body["errors"][0]["field"], "reason", "{reason:?}");
    }
}

#[tokio::test]
async fn a_query_filter_with_a_control_character_is_422_not_a_database_error() {
    // Review finding (issue 21, second round): the ARN filters of GET /v1/shares took any text up to
    // their length, and a NUL reached the database (PostgreSQL refuses it in text: a 500).
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    for (query, field) in [
        ("secret_arn=arn%00x", "secret_arn"),
        ("principal_arn=%00", "principal_arn"),
        ("status=active%07", "status"),
        ("expiring_within=7d%00", "expiring_within"),
    ] {
        let r = t
            .get(&format!("/v1/shares?{query}"), &alice)
            .await
            .expect(422);
        assert_eq!(r.body["errors"][0]["field"], field, "{query}: {}", r.text);
        assert!(r.text.contains("control"), "{query}: {}", r.text);
    }
    t.get("/v1/shares?secret_arn=arn", &alice).await.expect(200);
}
