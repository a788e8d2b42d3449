//! The role matrix, generated from the served OpenAPI document: every operation is called with no
//! token, a malformed token, a well-formed unknown token, an expired and a revoked broker token, JWTs
//! from another issuer, for another audience, expired, with alg `none` and forged with HS256, and each
//! role both as a broker token and as a JWT from the configured issuer. A route added without an entry
//! in `ALLOWED` fails the test.

use axum::http::Method;
use secret_broker::domain::Role;
use serde_json::json;

use crate::harness::{ROLE, SECRET, TestApp};
use crate::jwt;

use Role::*;

/// Who may call each operation; `None` means public (no token needed).
const ALLOWED: &[(&str, &str, Option<&[Role]>)] = &[
    ("post", "/v1/principals", Some(&[Requester, Admin])),
    (
        "get",
        "/v1/principals",
        Some(&[Requester, Approver, Auditor, Admin]),
    ),
    (
        "get",
        "/v1/principals/{id}",
        Some(&[Requester, Approver, Auditor, Admin]),
    ),
    ("post", "/v1/shares", Some(&[Requester, Admin])),
    (
        "get",
        "/v1/shares",
        Some(&[Requester, Approver, Auditor, Admin]),
    ),
    (
        "get",
        "/v1/shares/{id}",
        Some(&[Requester, Approver, Auditor, Admin]),
    ),
    ("post", "/v1/shares/{id}/approve", Some(&[Approver, Admin])),
    ("post", "/v1/shares/{id}/reject", Some(&[Approver, Admin])),
    ("post", "/v1/shares/{id}/cancel", Some(&[Requester, Admin])),
    (
        "post",
        "/v1/shares/{id}/revoke",
        Some(&[Requester, Approver, Admin]),
    ),
    ("post", "/v1/shares/{id}/retry", Some(&[Admin])),
    ("post", "/v1/shares/{id}/repair", Some(&[Admin])),
    (
        "get",
        "/v1/shares/{id}/plan",
        Some(&[Requester, Approver, Auditor, Admin]),
    ),
    (
        "get",
        "/v1/shares/{id}/consumer",
        Some(&[Requester, Approver, Auditor, Admin]),
    ),
    (
        "post",
        "/v1/access-checks",
        Some(&[Requester, Approver, Auditor, Admin]),
    ),
    (
        "post",
        "/v1/access-reviews",
        Some(&[Approver, Auditor, Admin]),
    ),
    ("post", "/v1/tokens", Some(&[Admin])),
    ("get", "/v1/tokens", Some(&[Admin])),
    ("post", "/v1/tokens/{id}/revoke", Some(&[Admin])),
    ("get", "/v1/audit", Some(&[Auditor, Admin])),
    ("get", "/v1/audit/verify", Some(&[Auditor, Admin])),
    // Issue 21. Break-glass is on for requesters in the matrix (off by default: tests/it/break_glass.rs).
    ("post", "/v1/shares/{id}/break-glass", Some(&[Requester])),
    ("post", "/v1/shares/{id}/review", Some(&[Approver, Admin])),
    ("post", "/v1/slack/links", Some(&[Admin])),
    ("get", "/v1/slack/links", Some(&[Admin])),
    (
        "delete",
        "/v1/slack/links/{team_id}/{user_id}",
        Some(&[Admin]),
    ),
    // Authenticated by Slack's signature, not a token: see below.
    ("post", "/v1/slack/interactions", None),
    ("get", "/healthz", None),
    ("get", "/readyz", None),
    ("get", "/metrics", Some(&[Auditor, Admin])),
];

fn body_for(method: &str, path: &str, n: usize) -> Option<serde_json::Value> {
    match (method, path) {
        ("post", "/v1/principals") => {
            Some(json!({"arn": format!("arn:aws:iam::444455556666:role/matrix-{n}")}))
        }
        ("post", "/v1/shares") => {
            Some(json!({"secret_arn": SECRET, "principal_arn": ROLE, "justification": "matrix"}))
        }
        ("post", p) if p.ends_with("/approve") => Some(json!({})),
        ("post", p) if p.ends_with("/reject") => Some(json!({"comment": "matrix"})),
        ("post", p) if p.ends_with("/revoke") => Some(json!({"reason": "matrix"})),
        ("post", "/v1/access-checks") => Some(json!({"principal_arn": ROLE, "secret_arn": SECRET})),
        ("post", "/v1/tokens") => Some(json!({"name": format!("matrix-{n}"), "role": "auditor"})),
        ("post", p) if p.ends_with("/break-glass") => Some(json!({"reason": "matrix"})),
        ("post", p) if p.ends_with("/review") => Some(json!({"outcome": "justified"})),
        ("post", "/v1/slack/links") => {
            Some(json!({"team_id": "T1", "user_id": format!("U{n}"), "name": "matrix"}))
        }
        _ => None,
    }
}

#[tokio::test]
async fn every_operation_has_an_entry_and_every_cell_holds() {
    let jwks_dir = tempfile::tempdir().unwrap();
    // The matrix requests a share for every cell that needs one, as one requester.
    let t = TestApp::with(|c| {
        jwt::configure_file(c, jwks_dir.path());
        c.max_pending_per_requester.0 = Some(10_000);
        c.break_glass_roles = secret_broker::config::RoleList(vec![Requester]);
        c.slack_signing_secret = secret_broker::config::SecretText(Some("matrix".into()));
    });
    let now = t.app.clock.now().unix_timestamp();
    let spec = secret_broker::api::openapi();
    let mut operations = Vec::new();
    for (path, item) in &spec.paths.paths {
        let ops = [
            ("get", item.get.is_some()),
            ("post", item.post.is_some()),
            ("put", item.put.is_some()),
            ("patch", item.patch.is_some()),
            ("delete", item.delete.is_some()),
        ];
        for (m, present) in ops {
            if present {
                operations.push((m.to_owned(), path.clone()));
            }
        }
    }
    for (m, p) in &operations {
        assert!(
            ALLOWED.iter().any(|(am, ap, _)| am == m && ap == p),
            "{} {p} has no entry in the role matrix: add who may call it to ALLOWED",
            m.to_uppercase()
        );
    }
    assert_eq!(
        operations.len(),
        ALLOWED.len(),
        "ALLOWED lists an operation the API does not have"
    );

    let jwt_of = |role: Role| jwt::token(now, &format!("jwt-{}", role.as_str()), &[role.as_str()]);
    let tokens = [
        (Requester, t.token("m-requester", Requester).await),
        (Approver, t.token("m-approver", Approver).await),
        (Auditor, t.token("m-auditor", Auditor).await),
        (Admin, t.token("m-admin", Admin).await),
        (Requester, jwt_of(Requester)),
        (Approver, jwt_of(Approver)),
        (Auditor, jwt_of(Auditor)),
        (Admin, jwt_of(Admin)),
    ];
    let expired = secret_broker::auth::token::create_with_expiry(
        &t.app.store,
        "2026-11-29T12:00:00Z",
        "cli",
        "m-expired",
        Admin,
        Some("2026-11-29T11:59:59Z".into()),
    )
    .await
    .unwrap();
    let revoked = t.token("m-revoked", Admin).await;
    t.db()
        .execute(
            "UPDATE tokens SET revoked_at = '2026-11-29T12:00:00Z' WHERE id = ?1",
            [revoked.split('_').nth(1).unwrap()],
        )
        .unwrap();
    let admin_claims = jwt::claims(now, "m-jwt", &["admin"]);
    let jwt_with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = admin_claims.clone();
        f(&mut c);
        jwt::sign("ES256", Some("es-1"), &c)
    };
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("malformed token", Some("not-a-token".into())),
        (
            "unknown token",
            Some("sb_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        ),
        ("expired token", Some(expired)),
        ("revoked token", Some(revoked)),
        (
            "JWT from another issuer",
            Some(jwt_with(&|c| c["iss"] = "https://evil.example".into())),
        ),
        (
            "JWT for another audience",
            Some(jwt_with(&|c| c["aud"] = "another-service".into())),
        ),
        (
            "expired JWT",
            Some(jwt_with(&|c| c["exp"] = (now - 3600).into())),
        ),
        (
            "JWT with alg none",
            Some(jwt::sign("none", Some("es-1"), &admin_claims)),
        ),
        (
            "JWT forged with HS256 and the public key",
            Some(jwt::sign("HS256", Some("rs-1"), &admin_claims)),
        ),
    ];
    let principal_id = t
        .post(
            "/v1/principals",
            &tokens[0].1,
            json!({"arn": "arn:aws:iam::444455556666:user/matrix"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut n = 0;
    for (m, p, allowed) in ALLOWED {
        let method: Method = m.to_uppercase().parse().unwrap();
        // A fresh pending share per call, requested by the matrix requester of the same kind (broker
        // token or JWT), so that "their own" means the same for both.
        let fresh_path = async |requester: &str| {
            let share_id = t.request_share(requester).await;
            if p.starts_with("/v1/principals/") {
                p.replace("{id}", &principal_id)
            } else if p.starts_with("/v1/slack/links/") {
                t.db()
                    .execute(
                        "INSERT INTO slack_links (team_id, user_id, name, created_by, created_at) \
                         VALUES ('T1', 'UMATRIX', 'matrix', 'cli', '2026-11-29T12:00:00Z') \
                         ON CONFLICT (team_id, user_id) DO UPDATE SET name = excluded.name, \
                         created_by = excluded.created_by, created_at = excluded.created_at",
                        [],
                    )
                    .unwrap();
                p.replace("{team_id}", "T1").replace("{user_id}", "UMATRIX")
            } else if p.starts_with("/v1/tokens/") {
                let victim = t.token("matrix-victim", Auditor).await;
                p.replace("{id}", victim.split('_').nth(1).unwrap())
            } else {
                p.replace("{id}", &share_id)
            }
        };
        let path = fresh_path(&tokens[0].1).await;
        let Some(allowed) = allowed else {
            if *p == "/v1/slack/interactions" {
                // No token is looked at: without Slack's signature every caller is refused.
                let token = tokens
                    .iter()
                    .find(|(r, _)| *r == Admin)
                    .map(|(_, t)| t.as_str());
                let r = t.call(method.clone(), &path, token, None).await.expect(401);
                assert!(r.text.contains("Signature"), "{}", r.text);
                continue;
            }
            let r = t.call(method.clone(), &path, None, None).await;
            assert_eq!(r.status, 200, "{m} {path} is public: {}", r.text);
            continue;
        };
        for (label, token) in &refused {
            n += 1;
            let r = t
                .call(method.clone(), &path, token.as_deref(), body_for(m, p, n))
                .await;
            assert_eq!(r.status, 401, "{label} on {m} {p}: {}", r.text);
            let r = r.expect(401);
            assert!(
                r.body["detail"].as_str().unwrap().contains("token")
                    || r.body["detail"].as_str().unwrap().contains("JWT"),
                "{label}: {}",
                r.text
            );
        }
        for (i, (role, token)) in tokens.iter().enumerate() {
            n += 1;
            let requester = if i < 4 { &tokens[0].1 } else { &tokens[4].1 };
            let path = fresh_path(requester).await;
            // The share is put in the state the operation acts on, so an allowed call reaches it.
            let in_state = |path: &str| {
                let state = match p {
                    p if p.ends_with("/revoke") => "active",
                    p if p.ends_with("/retry") => "failed",
                    p if p.ends_with("/repair") => "drifted",
                    p if p.ends_with("/review") => {
                        let id = path.split('/').nth(3).unwrap();
                        t.db()
                            .execute(
                                "INSERT INTO break_glass (share_id, requested_by, reason, at, announced_at) \
                                 VALUES (?1, 'm-requester', 'matrix', '2026-11-29T12:00:00Z', '2026-11-29T12:00:00Z')",
                                [id],
                            )
                            .unwrap();
                        "approved"
                    }
                    _ => return,
                };
                let id = path.split('/').nth(3).unwrap();
                t.db()
                    .execute("UPDATE shares SET status = ?1 WHERE id = ?2", [state, id])
                    .unwrap();
            };
            in_state(&path);
            let r = t
                .call(method.clone(), &path, Some(token), body_for(m, p, n))
                .await;
            let code = r.status.as_u16();
            if allowed.contains(role) {
                // Allowed: the call does what it names (502 only where it must read AWS, whose
                // clients point nowhere here).
                let reads_aws = p.ends_with("/plan")
                    || p.ends_with("/consumer")
                    || *p == "/v1/access-checks"
                    || *p == "/v1/access-reviews";
                assert!(
                    code < 400 || (code == 502 && reads_aws),
                    "{role} may call {m} {p} but got {code}: {}",
                    r.text
                );
                // A requester acts only on their own shares: another requester's is refused.
                if *role == Requester && (p.ends_with("/revoke") || p.ends_with("/cancel")) {
                    let other = if i < 4 { &tokens[4].1 } else { &tokens[0].1 };
                    let theirs = fresh_path(other).await;
                    in_state(&theirs);
                    n += 1;
                    let r = t
                        .call(method.clone(), &theirs, Some(token), body_for(m, p, n))
                        .await
                        .expect(403);
                    assert!(
                        r.body["detail"].as_str().unwrap().contains("requester"),
                        "{m} {p}: {}",
                        r.text
                    );
                }
            } else {
                let r = r.expect(403);
                assert!(
                    r.body["detail"].as_str().unwrap().contains("role"),
                    "{role} on {m} {p}: {}",
                    r.text
                );
            }
        }
    }
}

#[tokio::test]
async fn a_revoked_token_is_refused() {
    let t = TestApp::new();
    let token = t.token("gone", Requester).await;
    t.get("/v1/shares", &token).await.expect(200);
    let id = token.split('_').nth(1).unwrap().to_owned();
    t.db()
        .execute(
            "UPDATE tokens SET revoked_at = '2026-11-29T12:00:00Z' WHERE id = ?1",
            [id],
        )
        .unwrap();
    let r = t.get("/v1/shares", &token).await.expect(401);
    assert!(r.body["detail"].as_str().unwrap().contains("revoked"));
}

#[tokio::test]
async fn a_token_with_a_wrong_secret_is_refused() {
    let t = TestApp::new();
    let token = t.token("dave", Admin).await;
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    t.get("/v1/shares", &forged).await.expect(401);
    // The secret is stored only as a hash.
    let stored: String = t
        .db()
        .query_row(
            "SELECT secret_hash FROM tokens WHERE name = 'dave'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let secret = token.splitn(3, '_').nth(2).unwrap();
    assert!(!stored.contains(secret));
    assert_eq!(stored.len(), 64);
}

/// The identity cells of the matrix (issue 14): who may approve when a token was minted by the
/// requester, when names differ only in case or width, and who may revoke the last admin credential.
/// Each cell is (what, expected status, actual status).
#[tokio::test]
async fn identity_cells_hold() {
    let jwks_dir = tempfile::tempdir().unwrap();
    let t = TestApp::with(|c| c.approval_quorum.0 = 2);
    let o = TestApp::with(|c| jwt::configure_file(c, jwks_dir.path()));
    let now = o.app.clock.now().unix_timestamp();
    let id_of = |tok: &str| tok.split('_').nth(1).unwrap().to_owned();
    let minted = async |t: &TestApp, by: &str, name: &str, role: &str, same: bool| {
        t.post(
            "/v1/tokens",
            by,
            json!({"name": name, "role": role, "same_person": same}),
        )
        .await
        .expect(201)
        .body["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let approve = async |t: &TestApp, id: &str, tok: &str| {
        t.post_empty(&format!("/v1/shares/{id}/approve"), tok)
            .await
            .status
            .as_u16()
    };
    let mut cells: Vec<(&str, u16, u16)> = Vec::new();

    // Tokens minted by the requester.
    let root = t.token("root", Admin).await;
    let bob = t.token("bob", Approver).await;
    let alice = t.token("alice", Requester).await;
    let by_root = t.request_share(&root).await;
    let fresh = minted(&t, &root, "m-fresh", "approver", false).await;
    cells.push((
        "approver token the requester minted, fresh name",
        403,
        approve(&t, &by_root, &fresh).await,
    ));
    let as_bob = minted(&t, &root, "bob", "approver", true).await;
    cells.push((
        "approver token the requester minted, another's name",
        403,
        approve(&t, &by_root, &as_bob).await,
    ));
    let admin2 = minted(&t, &root, "m-admin2", "admin", false).await;
    cells.push((
        "admin token the requester minted",
        403,
        approve(&t, &by_root, &admin2).await,
    ));
    let laundered = minted(&t, &admin2, "m-laundered", "approver", false).await;
    cells.push((
        "approver token minted through a token the requester minted",
        403,
        approve(&t, &by_root, &laundered).await,
    ));
    let r = t
        .post(
            "/v1/tokens",
            &root,
            json!({"name": "BOB", "role": "approver"}),
        )
        .await;
    cells.push((
        "another's name without same_person (case variant)",
        409,
        r.status.as_u16(),
    ));
    cells.push((
        "approver token issued by the command line",
        200,
        approve(&t, &by_root, &bob).await,
    ));
    let by_alice = t.request_share(&alice).await;
    cells.push((
        "approver token the requester's admin minted, other requester",
        200,
        approve(&t, &by_alice, &fresh).await,
    ));

    // Controllers (issue 14 follow-up): whoever issued a token can act as its holder.
    let fresh2 = minted(&t, &root, "m-fresh2", "approver", false).await;
    cells.push((
        "second approver minted by the admin who minted a recorded approval's token",
        409,
        approve(&t, &by_alice, &fresh2).await,
    ));
    cells.push((
        "that admin itself, after an approver it minted",
        409,
        approve(&t, &by_alice, &root).await,
    ));
    let req_by_root = minted(&t, &root, "m-req", "requester", false).await;
    let by_minted = t.request_share(&req_by_root).await;
    cells.push((
        "the admin who minted the requester",
        403,
        approve(&t, &by_minted, &root).await,
    ));
    cells.push((
        "approver minted by the admin who minted the requester",
        403,
        approve(&t, &by_minted, &fresh2).await,
    ));
    cells.push((
        "approver issued by the command line, for a requester an admin minted",
        200,
        approve(&t, &by_minted, &bob).await,
    ));

    // Case variants.
    let big_alice = t.token("ALICE", Approver).await;
    let by_alice2 = t.request_share(&alice).await;
    cells.push((
        "requester's name in upper case",
        403,
        approve(&t, &by_alice2, &big_alice).await,
    ));
    let carol = t.token("carol", Approver).await;
    let carol_cap = t.token("Carol", Approver).await;
    cells.push(("first vote", 200, approve(&t, &by_alice2, &carol).await));
    cells.push((
        "second vote, same name in another case",
        409,
        approve(&t, &by_alice2, &carol_cap).await,
    ));
    for reserved in ["CLI", "Anonymous", "SYSTEM"] {
        let r = t
            .post(
                "/v1/tokens",
                &root,
                json!({"name": reserved, "role": "auditor"}),
            )
            .await;
        cells.push(("reserved name in another case", 422, r.status.as_u16()));
    }
    let dora = jwt::token(now, "Dora", &["requester"]);
    let by_dora = o.request_share(&dora).await;
    cells.push((
        "JWT naming the requester in upper case",
        403,
        approve(&o, &by_dora, &jwt::token(now, "DORA", &["approver"])).await,
    ));
    cells.push((
        "JWT naming the requester in fullwidth letters",
        403,
        approve(&o, &by_dora, &jwt::token(now, "ＤＯＲＡ", &["approver"])).await,
    ));
    cells.push((
        "JWT of someone else",
        200,
        approve(&o, &by_dora, &jwt::token(now, "erin", &["approver"])).await,
    ));

    // The last admin credential.
    let solo = TestApp::new();
    let only = solo.token("root", Admin).await;
    let revoke = async |t: &TestApp, by: &str, id: &str| {
        t.post_empty(&format!("/v1/tokens/{id}/revoke"), by)
            .await
            .status
            .as_u16()
    };
    cells.push((
        "revoke the last admin token (itself)",
        409,
        revoke(&solo, &only, &id_of(&only)).await,
    ));
    let expiring = solo
        .post(
            "/v1/tokens",
            &only,
            json!({"name": "root", "role": "admin", "expires_in": "1d"}),
        )
        .await
        .expect(201)
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    cells.push((
        "revoke the last lasting admin token, an expiring one left",
        409,
        revoke(&solo, &expiring, &id_of(&only)).await,
    ));
    cells.push((
        "revoke an expiring admin token, a lasting one left",
        204,
        revoke(&solo, &only, &id_of(&expiring)).await,
    ));
    let o_admin = o.token("root", Admin).await;
    cells.push((
        "revoke the last admin token, OIDC maps admin",
        204,
        revoke(&o, &o_admin, &id_of(&o_admin)).await,
    ));

    let wrong: Vec<_> = cells.iter().filter(|(_, want, got)| want != got).collect();
    assert!(wrong.is_empty(), "cells that do not hold: {wrong:#?}");
    assert_eq!(cells.len(), 25);
}
