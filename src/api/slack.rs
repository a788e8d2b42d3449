//! Approving from Slack (issue 21): `POST /v1/slack/interactions` receives the Approve / Reject button
//! clicks of a pending share's notification, and `/v1/slack/links` (admin) says which broker identity
//! each Slack user decides as.
//!
//! A callback is authenticated by its signature alone ([`crate::slack::verify`]: HMAC-SHA256 of
//! `v0:{timestamp}:{body}` with the app's signing secret, at most five minutes old, never seen before);
//! a refused one is a 401 and a `slack.refused` audit row (coalesced: anyone can send them). The
//! clicker is found by the (team, user) ids Slack signs, through a link an admin set, never by a
//! display name; the decision goes through [`workflow::decide`], the function behind
//! `POST /v1/shares/{id}/approve` and `/reject`, so the self-approval ban, one vote per person, the
//! quorum and the identity rules hold as they do in the API; the link is read, and the linked name's
//! approver (or admin) role checked, in the vote's own transaction, at each click. The outcome replaces
//! the message through the callback's `response_url`, posted in the background once Slack has its 200;
//! a refusal is shown to the clicker only (ephemeral).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::extract::{Auth, Body, RequestId};
use super::problem::Problem;
use super::{check_text, invalid_if_any};
use crate::app::App;
use crate::domain::{Role, ShareId, ShareStatus, fmt_time};
use crate::error::{Error, FieldError, Result};
use crate::store::slack::{self as links, SlackLink};
use crate::workflow::{self, Decision, Origin, Resource};

/// Longest form body field `payload` read (Slack's are a few KiB).
pub(crate) const MAX_PAYLOAD: usize = 60_000;

/// The longest Slack team or user id taken (Slack's are about 11 characters).
pub(crate) const MAX_SLACK_ID: usize = 32;

/// The form Slack posts (`application/x-www-form-urlencoded`).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SlackInteraction {
    /// The interaction as JSON (a `block_actions` payload).
    #[schema(max_length = 60000)]
    pub(crate) payload: String,
}

/// Receive a Slack button click (Approve / Reject on a pending share's notification).
///
/// Not authenticated by a bearer token: by Slack's signature (`X-Slack-Signature`,
/// `X-Slack-Request-Timestamp`), with `slack_signing_secret`.
#[utoipa::path(
    post, path = "/v1/slack/interactions", tag = "slack",
    request_body(content = SlackInteraction, content_type = "application/x-www-form-urlencoded"),
    params(
        ("X-Slack-Signature" = String, Header, max_length = 128, description = "v0= and the hex HMAC-SHA256 of v0:{timestamp}:{body}"),
        ("X-Slack-Request-Timestamp" = String, Header, max_length = 12, description = "Unix time of the callback; more than five minutes old is refused"),
    ),
    responses(
        (status = 200, description = "Handled: the decision (or the refusal, to the clicker only) is posted to the callback's response_url"),
        (status = 401, description = "Missing signature headers (whether or not Slack approvals are on), or a wrong, old or replayed signature (audited while Slack approvals are on)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A callback with both signature headers while Slack approvals are off (no slack_signing_secret)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Signed, but not a button click this broker sent", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn interactions(
    State(app): State<Arc<App>>,
    rid: RequestId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let on = app.config.slack_signing_secret.0.is_some();
    // Without Slack's headers the callback is unauthenticated whether or not approvals from Slack are
    // on (401, as the OpenAPI document says: the headers are required); a signed one is 404 when off.
    if header("x-slack-signature").is_none() || header("x-slack-request-timestamp").is_none() {
        if on {
            workflow::record_slack_refusal(&app, "missing-signature", String::new()).await?;
        }
        return Err(Error::Unauthorized(
            "a Slack callback needs Slack's X-Slack-Signature and X-Slack-Request-Timestamp headers \
             (bearer tokens are not taken here)"
                .into(),
        ));
    }
    let Some(secret) = app.config.slack_signing_secret.0.clone() else {
        return Err(Error::NotFound(
            "approving from Slack is off on this broker (no slack_signing_secret)".into(),
        ));
    };
    if header("x-slack-signature").is_none() || header("x-slack-request-timestamp").is_none() {
        workflow::record_slack_refusal(&app, "missing-signature", String::new()).await?;
        return Err(Error::Unauthorized(
            "a Slack callback needs Slack's X-Slack-Signature and X-Slack-Request-Timestamp headers \
             (bearer tokens are not taken here)"
                .into(),
        ));
    }
    let now = app.clock.now().unix_timestamp();
    let signature = header("x-slack-signature").map(str::to_owned);
    let ts = match crate::slack::verify(
        &secret,
        header("x-slack-request-timestamp"),
        signature.as_deref(),
        &body,
        now,
    ) {
        Ok(ts) => ts,
        Err(why) => {
            workflow::record_slack_refusal(&app, why.as_str(), String::new()).await?;
            return Err(Error::Unauthorized(match why {
                crate::slack::Refusal::Stale => format!(
                    "the callback's timestamp is more than {} seconds from now: refused as a possible replay",
                    crate::slack::MAX_AGE_SECS
                ),
                _ => "the callback's X-Slack-Signature does not verify with the signing secret"
                    .into(),
            }));
        }
    };
    // Hex is case-insensitive (the check accepts either case), so the replay table keeps one spelling:
    // the same callback with its signature in upper case is the same callback.
    let sig = signature.unwrap_or_default().to_ascii_lowercase();
    let fresh = app
        .store
        .write(move |c| {
            links::remember_signature(c, &sig, ts, now - 2 * crate::slack::MAX_AGE_SECS)
        })
        .await?;
    if !fresh {
        workflow::record_slack_refusal(&app, "replayed", String::new()).await?;
        return Err(Error::Unauthorized(
            "this callback was already received: a replay is refused".into(),
        ));
    }
    let click = parse(&body)?;
    let reply = decide(&app, &rid, &click).await;
    if crate::slack::response_url_allowed(
        &click.response_url,
        app.config.slack_allow_loopback_response_url.0,
    ) {
        // Slack wants its 200 within 3 s: the message is updated in the background (bounded by
        // `respond`'s own timeout), after the answer.
        tokio::spawn(async move {
            if let Err(e) = crate::slack::respond(&click.response_url, &reply).await {
                tracing::warn!(error = %e, "could not update the Slack message");
            }
        });
    } else {
        tracing::warn!(
            "a Slack callback's response_url is not on {}: not called",
            crate::slack::HOOKS_HOST
        );
    }
    Ok(StatusCode::OK.into_response())
}

/// What a button click carries.
#[derive(Debug)]
struct Click {
    team_id: String,
    user_id: String,
    action: Decision,
    share_id: ShareId,
    response_url: String,
}

fn parse(body: &[u8]) -> Result<Click> {
    let bad = |m: &str| Error::field("payload", m.to_owned());
    let form: SlackInteraction = serde_urlencoded::from_bytes(body)
        .map_err(|e| bad(&format!("the body is not a form with a payload field: {e}")))?;
    if form.payload.len() > MAX_PAYLOAD {
        return Err(bad("is longer than 60000 characters"));
    }
    let v: serde_json::Value = serde_json::from_str(&form.payload)
        .map_err(|_| bad("is not JSON (expected Slack's block_actions payload)"))?;
    if v["type"] != "block_actions" {
        return Err(bad("is not a block_actions interaction"));
    }
    let id = |x: &serde_json::Value| {
        x.as_str()
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= MAX_SLACK_ID
                    && s.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .map(str::to_owned)
    };
    let user_id = id(&v["user"]["id"]).ok_or_else(|| bad("has no user.id"))?;
    let team_id = id(&v["user"]["team_id"])
        .or_else(|| id(&v["team"]["id"]))
        .ok_or_else(|| bad("has no team.id"))?;
    let a = &v["actions"][0];
    let action = match a["action_id"].as_str() {
        Some(crate::slack::APPROVE_ACTION) => Decision::Approve,
        Some(crate::slack::REJECT_ACTION) => Decision::Reject,
        _ => {
            return Err(bad(
                "is not a click on this broker's Approve or Reject button",
            ));
        }
    };
    let share_id = a["value"]
        .as_str()
        .and_then(|v| ShareId::parse(v).ok())
        .ok_or_else(|| bad("does not carry a share id"))?;
    let response_url = v["response_url"]
        .as_str()
        .ok_or_else(|| bad("has no response_url"))?
        .to_owned();
    Ok(Click {
        team_id,
        user_id,
        action,
        share_id,
        response_url,
    })
}

/// Decides as the linked identity ([`workflow::decide_from_slack`]) and says what to post back: the
/// outcome (replacing the message), or the refusal (ephemeral: only the clicker sees it; a 403, 409 or
/// 429 is audited as `share.refused`, by the linked name, or by `slack:<team>/<user>` when unlinked).
async fn decide(app: &App, rid: &RequestId, click: &Click) -> serde_json::Value {
    testing::before_vote(&click.user_id).await;
    let vote = workflow::decide_from_slack(
        app,
        rid.0.clone(),
        click.team_id.clone(),
        click.user_id.clone(),
        click.share_id,
        click.action,
    )
    .await;
    let (verb, done) = match click.action {
        Decision::Approve => ("approve", "approved"),
        Decision::Reject => ("reject", "rejected"),
    };
    let err = match (vote.result, &vote.link) {
        (Ok(share), Some(link)) => {
            if share.status == ShareStatus::Approved {
                app.applier.kick(&share.secret_arn);
            }
            let approvals = share
                .approvals
                .iter()
                .filter(|v| v.decision == crate::domain::Decision::Approve)
                .count();
            let text = format!(
                "secret-broker: share {} is *{}*: {done} by {} from Slack ({approvals} of {} approvals)",
                &click.share_id.to_string()[..8],
                share.status,
                link.name,
                share.approvals_required,
            );
            return json!({"replace_original": true, "text": crate::slack::slack_text(&text)});
        }
        (Ok(_), None) => Error::Internal("a Slack vote without its link".into()),
        (Err(e), _) => e,
    };
    if matches!(err.status(), 403 | 409 | 429) {
        let origin = Origin {
            actor: vote.link.map_or_else(
                || format!("slack:{}/{}", click.team_id, click.user_id),
                |l| l.name,
            ),
            request_id: rid.0.clone(),
        };
        if let Err(e) = workflow::record_refusal(
            app,
            origin,
            Resource::Share,
            Some(click.share_id.to_string()),
            &format!("{verb} (slack)"),
            &err,
        )
        .await
        {
            tracing::error!(error = %e, "could not audit a refused Slack decision");
        }
    }
    json!({
        "response_type": "ephemeral",
        "replace_original": false,
        "text": crate::slack::slack_text(&format!("Not recorded: {err}")),
    })
}

/// Body of `POST /v1/slack/links`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSlackLink {
    /// Slack workspace (team) id, as Slack signs it in callbacks (not its name).
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[A-Z0-9]{1,32}$",
        example = "T0123ABCD"
    )]
    pub(crate) team_id: String,
    /// Slack user id (not a display name, which anyone can change).
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[A-Z0-9]{1,32}$",
        example = "U0123ABCD"
    )]
    pub(crate) user_id: String,
    /// The broker name the Slack user approves and rejects as: the name of their broker tokens, or
    /// `oidc:<sub>` for an OIDC identity. Its clicks count only while that name holds the approver or
    /// admin role through a live credential (checked at each click).
    #[schema(min_length = 1, max_length = 260, example = "bob")]
    pub(crate) name: String,
}

/// A Slack user's link.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SlackLinkView {
    /// Slack workspace (team) id.
    pub(crate) team_id: String,
    /// Slack user id.
    pub(crate) user_id: String,
    /// The broker name (canonical) the Slack user decides as, while it holds the approver or admin
    /// role through a live credential.
    pub(crate) name: String,
    /// The admin who set it.
    pub(crate) created_by: String,
    /// When, RFC 3339 UTC.
    pub(crate) created_at: String,
}

impl From<SlackLink> for SlackLinkView {
    fn from(l: SlackLink) -> Self {
        Self {
            team_id: l.team_id,
            user_id: l.user_id,
            name: l.name,
            created_by: l.created_by,
            created_at: l.created_at,
        }
    }
}

/// Every link.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SlackLinkList {
    /// By team and user.
    pub(crate) items: Vec<SlackLinkView>,
}

/// Checks a Slack id (team or user): 1 to 32 upper-case letters and digits.
pub(crate) fn check_slack_id(errors: &mut Vec<FieldError>, field: &str, v: &str) {
    if v.is_empty()
        || v.len() > MAX_SLACK_ID
        || !v
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        errors.push(FieldError {
            field: field.into(),
            message: format!(
                "must be a Slack id: 1 to {MAX_SLACK_ID} upper-case letters and digits (e.g. T0123ABCD, U0123ABCD)"
            ),
        });
    }
}

/// Checks a linked broker name: a token name (letters, digits, `._@-`, not reserved) or `oidc:<sub>`.
pub(crate) fn check_link_name(name: &str) -> std::result::Result<(), String> {
    if let Some(sub) = name.strip_prefix("oidc:") {
        // Blanks around the subject, or an invisible character anywhere in it (zero-width, format,
        // control), would make a name that looks like another identity's but never matches it.
        if sub.chars().all(super::is_invisible)
            || sub.chars().count() > 255
            || sub.starts_with(char::is_whitespace)
            || sub.ends_with(char::is_whitespace)
            || sub.chars().any(|c| super::is_invisible(c) && c != ' ')
        {
            return Err(
                "oidc:<sub> needs a subject of 1 to 255 visible characters: no blank subject, no \
                 blanks around it, no control, zero-width or other invisible characters"
                    .into(),
            );
        }
        return Ok(());
    }
    crate::auth::token::validate_name(name)
}

/// A link as an audit row's target: `team/user`, each cut as path values are in refusals.
fn link_target(team_id: &str, user_id: &str) -> String {
    format!(
        "{}/{}",
        super::principals::truncate(team_id),
        super::principals::truncate(user_id)
    )
}

/// Link a Slack user to a broker identity (admin): their clicks decide as that name, while it holds
/// the approver or admin role through a live credential. Replaces an earlier link of the same user.
#[utoipa::path(
    post, path = "/v1/slack/links", tag = "slack",
    request_body = CreateSlackLink,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Linked", body = SlackLinkView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id or name", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn link_create(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Body(body): Body<CreateSlackLink>,
) -> Result<Response> {
    let target = body
        .as_ref()
        .ok()
        .map(|b| link_target(&b.team_id, &b.user_id));
    super::guarded(
        &app,
        &rid,
        super::actor_of(&auth),
        Resource::SlackLink,
        target,
        "link",
        async {
            let caller = auth?;
            caller.require(&[Role::Admin])?;
            let body = body?;
            let mut errors = Vec::new();
            check_slack_id(&mut errors, "team_id", &body.team_id);
            check_slack_id(&mut errors, "user_id", &body.user_id);
            check_text(&mut errors, "name", &body.name, 260, true);
            if errors.iter().all(|e| e.field != "name")
                && let Err(m) = check_link_name(&body.name)
            {
                errors.push(FieldError {
                    field: "name".into(),
                    message: m,
                });
            }
            invalid_if_any(errors)?;
            let link = SlackLink {
                team_id: body.team_id,
                user_id: body.user_id,
                name: crate::identity::canonical(&body.name),
                created_by: caller.name.clone(),
                created_at: fmt_time(app.clock.now()),
            };
            let link =
                workflow::set_slack_link(&app.store, Origin::of(&caller, rid.0.clone()), link)
                    .await?;
            Ok((StatusCode::CREATED, Json(SlackLinkView::from(link))).into_response())
        },
    )
    .await
}

/// List the Slack links (admin).
#[utoipa::path(
    get, path = "/v1/slack/links", tag = "slack",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every link", body = SlackLinkList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn link_list(
    State(app): State<Arc<App>>,
    caller: crate::domain::Caller,
) -> Result<Json<SlackLinkList>> {
    caller.require(&[Role::Admin])?;
    let items = app.store.read(links::list_links).await?;
    Ok(Json(SlackLinkList {
        items: items.into_iter().map(SlackLinkView::from).collect(),
    }))
}

/// Remove a Slack user's link (admin).
#[utoipa::path(
    delete, path = "/v1/slack/links/{team_id}/{user_id}", tag = "slack",
    params(
        ("team_id" = String, Path, max_length = 32, description = "Slack team id"),
        ("user_id" = String, Path, max_length = 32, description = "Slack user id"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such link", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn link_delete(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Path((team_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let target = Some(link_target(&team_id, &user_id));
    super::guarded(
        &app,
        &rid,
        super::actor_of(&auth),
        Resource::SlackLink,
        target,
        "unlink",
        async {
            let caller = auth?;
            caller.require(&[Role::Admin])?;
            let now = fmt_time(app.clock.now());
            workflow::remove_slack_link(
                &app.store,
                Origin::of(&caller, rid.0.clone()),
                team_id,
                user_id,
                now,
            )
            .await?;
            Ok(StatusCode::NO_CONTENT)
        },
    )
    .await
}

/// `secret-broker slack link`: links a Slack user to a broker name as the command line (validated as
/// the API does; audited as done by `cli`). The error names the flag.
pub async fn cli_link(
    store: &crate::store::Store,
    team: String,
    user: String,
    name: String,
    now: String,
) -> std::result::Result<SlackLink, String> {
    let mut errors = Vec::new();
    check_slack_id(&mut errors, "--team", &team);
    check_slack_id(&mut errors, "--user", &user);
    if let Some(e) = errors.first() {
        return Err(format!("{}: {}", e.field, e.message));
    }
    check_link_name(&name).map_err(|m| format!("--name: {m}"))?;
    let link = SlackLink {
        team_id: team,
        user_id: user,
        name,
        created_by: "cli".into(),
        created_at: now,
    };
    workflow::set_slack_link(store, cli_origin(), link)
        .await
        .map_err(|e| e.to_string())
}

/// The role a broker name linked from Slack holds now through its live broker tokens (approver or
/// admin; `None`: neither, so its clicks are refused), for the command line to say what a link does.
/// Not for an `oidc:` name, whose role comes from its OIDC console sign-in.
pub async fn cli_link_role(
    store: &crate::store::Store,
    name: String,
    now: String,
) -> Result<Option<Role>> {
    let roles: Vec<Role> = store
        .read(move |c| crate::store::slack::live_tokens(c, &name, &now))
        .await?
        .iter()
        .filter_map(|(_, r)| r.parse().ok())
        .collect();
    Ok([Role::Admin, Role::Approver]
        .into_iter()
        .find(|r| roles.contains(r)))
}

/// `secret-broker slack unlink`: removes a Slack user's link as the command line.
pub async fn cli_unlink(
    store: &crate::store::Store,
    team: String,
    user: String,
    now: String,
) -> Result<()> {
    workflow::remove_slack_link(store, cli_origin(), team, user, now).await
}

fn cli_origin() -> Origin {
    Origin {
        actor: "cli".into(),
        request_id: None,
    }
}

/// A test gate (for the integration tests only; nothing in the broker sets it): holds the next click
/// of one Slack user just before its vote is written, so a test can change the link meanwhile.
#[doc(hidden)]
pub mod testing {
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    struct Gate {
        user_id: String,
        reached: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    }

    static GATE: Mutex<Option<Gate>> = Mutex::new(None);

    /// Holds the next click of `user_id`: it sends on `reached` and waits for `release` (at most 10 s).
    pub fn hold_before_vote(
        user_id: &str,
        reached: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    ) {
        *GATE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Gate {
            user_id: user_id.to_owned(),
            reached,
            release,
        });
    }

    /// Where a click of `user_id` waits when a test holds it.
    pub(crate) async fn before_vote(user_id: &str) {
        let gate = {
            let mut g = GATE.lock().unwrap_or_else(|e| e.into_inner());
            if g.as_ref().is_some_and(|g| g.user_id == user_id) {
                g.take()
            } else {
                None
            }
        };
        if let Some(g) = gate {
            let _ = g.reached.send(());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), g.release).await;
        }
    }
}
