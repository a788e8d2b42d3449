//! Token lifecycle: admins create (shown once), list (never shown again), expire and revoke tokens.

use secret_broker::domain::Role::*;
use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn create_list_expire_and_revoke() {
    let t = TestApp::new();
    let root = t.token("root", Admin).await;
    let r = t
        .post(
            "/v1/tokens",
            &root,
            json!({"name": "ci-portal", "role": "requester", "expires_in": "1h"}),
        )
        .await
        .expect(201);
    let token = r.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sb_"));
    assert_eq!(r.body["name"], "ci-portal");
    assert_eq!(r.body["expires_at"], "2026-11-29T13:00:00Z");
    t.get("/v1/shares", &token).await.expect(200);

    // The listing shows every token, never a secret or a hash.
    let list = t.get("/v1/tokens", &root).await.expect(200);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let secret = token.splitn(3, '_').nth(2).unwrap();
    assert!(!list.text.contains(secret) && !list.text.contains("secret_hash"));

    // Expired: refused at once, saying so.
    t.clock.advance(std::time::Duration::from_secs(2 * 3600));
    let r = t.get("/v1/shares", &token).await.expect(401);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("expired at 2026-11-29T13:00:00Z")
    );

    // Revoked: refused at once; revoking again is 404.
    let other = t.token("bob", Approver).await;
    let id = other.split('_').nth(1).unwrap();
    t.get("/v1/shares", &other).await.expect(200);
    let r = t
        .post_empty(&format!("/v1/tokens/{id}/revoke"), &root)
        .await;
    assert_eq!(r.status, 204);
    let r = t.get("/v1/shares", &other).await.expect(401);
    assert!(r.body["detail"].as_str().unwrap().contains("revoked"));
    t.post_empty(&format!("/v1/tokens/{id}/revoke"), &root)
        .await
        .expect(404);

    // Both are in the audit log, by the admin who did them.
    let db = t.db();
    let rows: Vec<(String, String)> = db
        .prepare("SELECT actor, action FROM audit WHERE action LIKE 'token.%' ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(rows.contains(&("root".into(), "token.created".into())));
    assert!(rows.contains(&("root".into(), "token.revoked".into())));

    // Bad input is named.
    let r = t
        .post(
            "/v1/tokens",
            &root,
            json!({"name": "x y", "role": "auditor"}),
        )
        .await
        .expect(422);
    assert_eq!(r.body["errors"][0]["field"], "name");
    let r = t
        .post(
            "/v1/tokens",
            &root,
            json!({"name": "ok", "role": "auditor", "expires_in": "soon"}),
        )
        .await
        .expect(422);
    assert_eq!(r.body["errors"][0]["field"], "expires_in");
    t.post(
        "/v1/tokens",
        &root,
        json!({"name": "ok", "role": "overlord"}),
    )
    .await
    .expect(422);
}
