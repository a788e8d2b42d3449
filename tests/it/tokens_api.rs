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

/// The cache of verified tokens (src/auth/cache.rs) never outlives a revoke, a delete or an expiry,
/// whoever makes it: each token is authenticated twice (so the second comes from the cache), then
/// changed, and the very next request is refused.
#[tokio::test]
async fn a_cached_token_is_refused_on_the_very_next_request_after_a_revoke_or_its_expiry() {
    let t = TestApp::new();
    let root = t.token("root", Admin).await;
    let warm = |token: String| {
        let t = &t;
        async move {
            for _ in 0..2 {
                t.get("/v1/shares", &token).await.expect(200);
            }
            token
        }
    };
    let id_of = |token: &str| token.split('_').nth(1).unwrap().to_owned();

    // Revoked through the API.
    let a = warm(t.token("alice", Approver).await).await;
    let r = t
        .post_empty(&format!("/v1/tokens/{}/revoke", id_of(&a)), &root)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = t.get("/v1/shares", &a).await.expect(401);
    assert!(r.body["detail"].as_str().unwrap().contains("revoked"));

    // Revoked in the database by another process (here: the test's own connection to the file).
    let b = warm(t.token("bob", Approver).await).await;
    t.db()
        .execute(
            "UPDATE tokens SET revoked_at = '2026-11-29T12:00:00Z' WHERE id = ?1",
            [id_of(&b)],
        )
        .unwrap();
    let r = t.get("/v1/shares", &b).await.expect(401);
    assert!(r.body["detail"].as_str().unwrap().contains("revoked"));

    // Deleted in the database.
    let c = warm(t.token("carol", Approver).await).await;
    t.db()
        .execute("DELETE FROM tokens WHERE id = ?1", [id_of(&c)])
        .unwrap();
    t.get("/v1/shares", &c).await.expect(401);

    // Its expiry brought forward in the database.
    let d = warm(t.token("dave", Approver).await).await;
    t.db()
        .execute(
            "UPDATE tokens SET expires_at = '2026-11-29T12:00:00Z' WHERE id = ?1",
            [id_of(&d)],
        )
        .unwrap();
    let r = t.get("/v1/shares", &d).await.expect(401);
    assert!(r.body["detail"].as_str().unwrap().contains("expired"));

    // Expired on the service clock: refused from the second it ends, not a second later.
    let e = t
        .post(
            "/v1/tokens",
            &root,
            json!({"name": "erin", "role": "auditor", "expires_in": "1h"}),
        )
        .await
        .expect(201);
    let e = warm(e.body["token"].as_str().unwrap().to_owned()).await;
    t.clock.advance(std::time::Duration::from_secs(3599));
    t.get("/v1/shares", &e).await.expect(200);
    t.clock.advance(std::time::Duration::from_secs(1));
    let r = t.get("/v1/shares", &e).await.expect(401);
    assert!(r.body["detail"].as_str().unwrap().contains("expired"));

    // A wrong secret under a cached token's id is refused.
    let f = warm(t.token("frank", Approver).await).await;
    let mut forged = f.clone();
    forged.pop();
    forged.push(if f.ends_with('A') { 'B' } else { 'A' });
    t.get("/v1/shares", &forged).await.expect(401);
    t.get("/v1/shares", &f).await.expect(200);
}
