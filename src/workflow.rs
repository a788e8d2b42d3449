//! The share workflow: every state change is one write transaction that checks the rule, changes the
//! row and appends its audit event, so a change without its audit row (or the reverse) cannot exist.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::json;
use uuid::Uuid;

use crate::app::App;
use time::OffsetDateTime;

use crate::domain::{ActionSet, Caller, Role, ShareId, ShareStatus, fmt_time, utc_seconds};
use crate::error::{Error, Result};
use crate::identity;
use crate::policy::arn::{PrincipalArn, SecretArn};
use crate::store::audit::{self, NewEvent};
use crate::store::rows::{self, Principal, Share, StoredResponse};
use crate::store::slack::SlackLink;
use crate::store::{Transition, Tx, transition};

/// Who did something, and in which request; what every audit row needs.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The actor's name.
    pub(crate) actor: String,
    /// The request id, when there is one.
    pub(crate) request_id: Option<String>,
}

impl Origin {
    /// From an authenticated caller.
    pub(crate) fn of(caller: &Caller, request_id: Option<String>) -> Self {
        Self {
            actor: caller.name.clone(),
            request_id,
        }
    }

    /// `share` (in the status it was read in) becoming `to`, by this origin.
    fn transition<'a>(
        &'a self,
        at: &'a str,
        share_id: ShareId,
        share: &Share,
        to: ShareStatus,
        action: &'a str,
        details: serde_json::Value,
    ) -> Transition<'a> {
        Transition {
            request_id: self.request_id.as_deref(),
            ..Transition::new(share_id, share.status, to, at, &self.actor, action, details)
        }
    }

    fn event<'a>(
        &'a self,
        at: &'a str,
        action: &'a str,
        share_id: Option<ShareId>,
        details: serde_json::Value,
    ) -> NewEvent<'a> {
        NewEvent {
            at,
            actor: &self.actor,
            action,
            share_id,
            request_id: self.request_id.as_deref(),
            details,
        }
    }
}

/// The header that makes a share request idempotent (as named in a field error).
pub(crate) const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// A validated share request.
#[derive(Debug, Clone)]
pub(crate) struct NewShare {
    /// The secret.
    pub(crate) secret_arn: SecretArn,
    /// The consumer.
    pub(crate) principal_arn: PrincipalArn,
    /// What it grants.
    pub(crate) actions: ActionSet,
    /// `None`: any stage.
    pub(crate) version_stage: Option<String>,
    /// Why.
    pub(crate) justification: String,
    /// When access ends.
    pub(crate) expires_at: OffsetDateTime,
}

/// The answer to a create call: status code, JSON body, and whether it was replayed from an
/// Idempotency-Key.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    /// HTTP status.
    pub(crate) status: u16,
    /// JSON body.
    pub(crate) body: String,
    /// The new resource's id (for the Location header).
    pub(crate) id: String,
    /// True when the answer was replayed from an earlier request with the same key.
    pub(crate) replayed: bool,
}

fn new_principal(
    arn: &PrincipalArn,
    description: Option<String>,
    by: &str,
    now: &str,
) -> Principal {
    Principal {
        id: Uuid::now_v7().to_string(),
        arn: arn.clone(),
        account_id: (!arn.kind().is_org()).then(|| arn.account().to_owned()),
        kind: arn.kind(),
        description,
        created_by: by.to_owned(),
        created_at: now.to_owned(),
    }
}

/// Registers a consumer principal; 409 with the existing id when it is already registered.
pub(crate) async fn register_principal(
    app: &App,
    origin: Origin,
    arn: PrincipalArn,
    description: Option<String>,
) -> Result<Principal> {
    let now = fmt_time(app.clock.now());
    app.store
        .write(move |c| {
            if let Some(existing) = rows::principal_by_arn(c, arn.as_str())? {
                return Err(Error::Conflict {
                    detail: format!(
                        "principal {} is already registered as {}: use that id",
                        existing.arn, existing.id
                    ),
                    current_status: None,
                    existing_id: Some(existing.id),
                });
            }
            let p = new_principal(&arn, description, &origin.actor, &now);
            rows::insert_principal(c, &p)?;
            audit::append(
                c,
                &origin.event(
                    &now,
                    "principal.registered",
                    None,
                    json!({"principal_id": p.id, "arn": p.arn, "kind": p.kind}),
                ),
            )?;
            Ok(p)
        })
        .await
}

/// Records a share request (registering its principal on the fly when needed), honouring an
/// idempotency key: the same key with the same request hash replays the first answer; with another
/// request hash it is a 422.
pub(crate) async fn request_share(
    app: &App,
    origin: Origin,
    req: NewShare,
    idempotency: Option<(String, String)>,
    render: fn(&Share) -> Result<String>,
    glass: Option<Glass>,
) -> Result<Created> {
    let now_t = utc_seconds(app.clock.now());
    let now = fmt_time(now_t);
    let rules = GlassRules::of(app);
    // An organization or OU share reaches every account of it: a wider blast radius, more approvers.
    let quorum = app.config.approval_quorum.0 as u32
        + if req.principal_arn.kind().is_org() {
            app.config.org_share_extra_approvals.0.unwrap_or(0)
        } else {
            0
        };
    let max_pending = app.config.max_pending_per_requester.0.map(u64::from);
    let notify = app.notify_enabled();
    let slack_buttons = app.config.slack_signing_secret.0.is_some();
    app.store
        .write(move |c| {
            if let Some((key, hash)) = &idempotency
                && let Some(prev) = rows::idempotent_response(c, &origin.actor, key)?
            {
                if &prev.request_hash != hash {
                    return Err(Error::field(
                        IDEMPOTENCY_KEY,
                        "this key was already used with a different request body; \
                         use a new key for a new request",
                    ));
                }
                let id = serde_json::from_str::<serde_json::Value>(&prev.body)?
                    .get("id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                return Ok(Created {
                    status: prev.status,
                    body: prev.body,
                    id,
                    replayed: true,
                });
            }
            // Each pending share is an audit row, a webhook post and an approver's time: bounded per
            // requester (counted in this transaction, so concurrent requests cannot overshoot).
            if let Some(max_pending) = max_pending {
                let pending =
                    rows::pending_shares_of(c, &identity::canonical(&origin.actor), max_pending)?;
                if pending >= max_pending {
                    return Err(Error::TooMany(format!(
                        "{} already has {pending} pending shares, the most one requester may have \
                         (setting max_pending_per_requester = {max_pending}): cancel some \
                         (POST /v1/shares/{{id}}/cancel) or wait for approvers to decide them, then \
                         request again",
                        origin.actor
                    )));
                }
            }
            let principal = match rows::principal_by_arn(c, req.principal_arn.as_str())? {
                Some(p) => p,
                None => {
                    let p = new_principal(&req.principal_arn, None, &origin.actor, &now);
                    rows::insert_principal(c, &p)?;
                    audit::append(
                        c,
                        &origin.event(
                            &now,
                            "principal.registered",
                            None,
                            json!({"principal_id": p.id, "arn": p.arn, "on_share_request": true}),
                        ),
                    )?;
                    p
                }
            };
            let share = Share {
                id: ShareId::new(),
                status: ShareStatus::Pending,
                status_reason: None,
                secret_arn: req.secret_arn,
                principal_id: principal.id,
                // The registered principal is the one of this ARN (looked up by it, or just made).
                principal_arn: req.principal_arn,
                actions: req.actions,
                version_stage: req.version_stage,
                justification: req.justification,
                expires_at: utc_seconds(req.expires_at),
                requested_by: origin.actor.clone(),
                approvals_required: quorum,
                approvals: Vec::new(),
                created_at: now_t,
                updated_at: now_t,
                key_arn: None,
                last_error: None,
                break_glass: false,
            };
            rows::insert_share(c, &share)?;
            if glass.is_none() {
                announce_pending(c, notify, slack_buttons, &share, &now)?;
            }
            audit::append(
                c,
                &origin.event(
                    &now,
                    "share.requested",
                    Some(share.id),
                    json!({
                        "secret_arn": share.secret_arn,
                        "principal_arn": share.principal_arn,
                        "actions": share.actions,
                        "version_stage": share.version_stage,
                        "expires_at": fmt_time(share.expires_at),
                        "justification": share.justification,
                        "approvals_required": share.approvals_required,
                    }),
                ),
            )?;
            let share = match &glass {
                Some(g) => break_glass_in(c, &origin, g, &share, &rules, now_t, notify)?,
                None => share,
            };
            let body = render(&share)?;
            if let Some((key, hash)) = &idempotency {
                rows::store_idempotent_response(
                    c,
                    &origin.actor,
                    key,
                    &StoredResponse {
                        request_hash: hash.clone(),
                        status: 201,
                        body: body.clone(),
                    },
                    &now,
                )?;
            }
            Ok(Created {
                status: 201,
                body,
                id: share.id.to_string(),
                replayed: false,
            })
        })
        .await
}

fn load(c: &Tx<'_>, id: ShareId) -> Result<Share> {
    rows::share_by_id(c, id)?.ok_or_else(|| Error::NotFound(format!("no share with id {id}")))
}

pub(crate) use crate::domain::Decision;

/// Records an approver's vote. Approve moves the share to `approved` once `approvals_required`
/// distinct approvers agree; reject ends it at once.
///
/// Names are compared in their canonical form ([`crate::identity`]): `Alice` is `alice` for
/// self-approval and for one vote per person. A broker token issued by the requester, directly or
/// through tokens the requester issued, cannot approve: the vote records the credential that cast it
/// and who issued it.
pub(crate) async fn decide(
    app: &App,
    caller: &Caller,
    origin: Origin,
    share_id: ShareId,
    decision: Decision,
    comment: Option<String>,
) -> Result<Share> {
    let now_t = app.clock.now();
    let notify = app.notify_enabled();
    let ballot = Arc::new(Ballot::of(caller, decision, comment));
    if decision == Decision::Approve {
        let (o, b) = (origin.clone(), ballot.clone());
        let share = app
            .store
            .read(move |c| authorized_share(c, &o, &b, share_id, now_t))
            .await?;
        room_for_approval(app, &share, &origin.actor).await?;
    }
    app.store
        .write(move |c| decide_in(c, &origin, &ballot, share_id, now_t, notify))
        .await
}

/// The share a vote is about, once the vote passes [`authorize_vote`] and is not the voter's second:
/// the read a final approval makes before it pays for the room check, so that a vote the write would
/// refuse (403, 409) is refused as it would be, without reading AWS.
fn authorized_share(
    c: &Tx<'_>,
    origin: &Origin,
    ballot: &Ballot,
    share_id: ShareId,
    now_t: OffsetDateTime,
) -> Result<Share> {
    let share = load(c, share_id)?;
    authorize_vote(c, origin, ballot, &share, now_t)?;
    if share
        .approvals
        .iter()
        .any(|v| identity::same(&v.approver, &origin.actor))
    {
        return Err(already_voted(origin, &share));
    }
    Ok(share)
}

fn already_voted(origin: &Origin, share: &Share) -> Error {
    Error::Conflict {
        detail: format!(
            "{} has already voted on this share (names are compared without regard to case: every \
             token of one name is one person)",
            origin.actor
        ),
        current_status: Some(share.status),
        existing_id: None,
    }
}

/// Distinct people who approved `share`, counting `voter` (about to approve) too. Votes recorded
/// before names were canonical may differ in case only.
fn approving_people(share: &Share, voter: Option<&str>) -> u32 {
    let mut people: Vec<String> = share
        .approvals
        .iter()
        .filter(|v| v.decision == Decision::Approve)
        .map(|v| identity::canonical(&v.approver))
        .chain(voter.map(identity::canonical))
        .collect();
    people.sort();
    people.dedup();
    people.len() as u32
}

/// How long the policy check before a final approval waits for AWS before letting the vote through.
const ROOM_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Refuses (409) the approval that would complete a share's quorum when the share's statements, merged
/// into the secret's or key's live policy and compacted, would exceed what AWS allows (20,480
/// characters for a resource policy, 32,768 bytes for a key policy): the vote is not recorded and the
/// share stays pending, instead of being approved only to fail at apply. The message says how full the
/// policy would be. Only a final approval pays for the AWS reads; when AWS cannot be read (or applying
/// is off) the vote goes through and the apply refuses it as before, with the same message.
async fn room_for_approval(app: &App, share: &Share, voter: &str) -> Result<()> {
    room_within(app, share, voter, ROOM_CHECK_TIMEOUT).await
}

/// [`room_for_approval`], waiting at most `timeout` for AWS.
async fn room_within(
    app: &App,
    share: &Share,
    voter: &str,
    timeout: std::time::Duration,
) -> Result<()> {
    if !app.applier.enabled()
        || share.status != ShareStatus::Pending
        || approving_people(share, Some(voter)) < share.approvals_required
    {
        return Ok(());
    }
    let findings = match tokio::time::timeout(timeout, app.applier.room_findings(share)).await {
        Ok(Ok(findings)) => findings,
        Ok(Err(e)) => {
            tracing::warn!(share_id = %share.id, error = %e, "cannot read the live policies before the final approval; the apply checks their size");
            return Ok(());
        }
        Err(_) => {
            tracing::warn!(share_id = %share.id, timeout_ms = timeout.as_millis() as u64, "AWS did not answer in time before the final approval; the apply checks the policies' size");
            return Ok(());
        }
    };
    match findings.iter().find(|f| f.code.ends_with("-too-large")) {
        Some(f) => Err(Error::Conflict {
            detail: format!(
                "share {} cannot be approved: {}. The approval is not recorded and the share stays pending",
                share.id, f.message
            ),
            current_status: Some(share.status),
            existing_id: None,
        }),
        None => Ok(()),
    }
}

/// A vote as [`decide_in`] records it: the decision and the credential that casts it.
struct Ballot {
    credential: String,
    issued_by: Option<String>,
    broker_token: bool,
    decision: Decision,
    comment: Option<String>,
}

impl Ballot {
    fn of(caller: &Caller, decision: Decision, comment: Option<String>) -> Self {
        Self {
            credential: caller.credential.clone(),
            issued_by: caller.issued_by.clone(),
            broker_token: caller.credential == caller.token_id,
            decision,
            comment,
        }
    }
}

/// The checks a vote passes before it is recorded ([`decide_in`] makes them in its write; a final
/// approval makes them first in a read, so that only an authorized vote pays for the room check):
/// not the requester nor anyone controlling the vote on the requester's behalf, the share pending and
/// not ended. For an approval, the names that control the vote.
fn authorize_vote(
    c: &Tx<'_>,
    origin: &Origin,
    ballot: &Ballot,
    share: &Share,
    now_t: OffsetDateTime,
) -> Result<Option<BTreeSet<String>>> {
    let now = fmt_time(now_t);
    let Ballot {
        credential,
        issued_by,
        broker_token,
        decision,
        ..
    } = ballot;
    let (broker_token, decision) = (*broker_token, *decision);
    let verb = match decision {
        Decision::Approve => "approve",
        Decision::Reject => "reject",
    };
    if identity::same(&share.requested_by, &origin.actor) {
        return Err(Error::Forbidden(format!(
            "{} requested this share and cannot {verb} it: another approver must decide{}",
            origin.actor,
            if decision == Decision::Reject {
                " (use POST /v1/shares/{id}/cancel to withdraw it)"
            } else {
                ""
            }
        )));
    }
    // Whoever issued a token saw its secret and can act as its holder, so a vote is cast by
    // the voter or by anyone in its issuer chain (the command line excepted: SECURITY.md).
    let voter = if decision == Decision::Approve {
        let cred = broker_token.then_some(credential.as_str());
        let mut voter = controllers(c, &origin.actor, cred)?;
        voter.extend(slack_controllers(c, credential, issued_by.as_deref())?);
        let requester = identity::canonical(&share.requested_by);
        if credential.starts_with("slack:") && voter.contains(&requester) {
            return Err(Error::Forbidden(format!(
                "this vote ({credential}, named {}) is controlled by {requester}, who requested \
                         this share: a Slack user linked by the requester cannot approve the request. \
                         Another admin links the Slack user, or approve with another identity",
                origin.actor,
            )));
        }
        let issuers = rows::token_issuers(c, credential)?;
        if broker_token && issuers.iter().any(|i| identity::same(i, &requester)) {
            let direct = issued_by
                .as_deref()
                .is_some_and(|i| identity::same(i, &requester));
            return Err(Error::Forbidden(format!(
                "this token ({credential}, named {}) was issued by {requester}{}, who requested \
                         this share: a token its requester issued cannot approve the request. Approve \
                         with a token issued by someone else (or by the command line), or with an OIDC \
                         identity",
                origin.actor,
                if direct {
                    ""
                } else {
                    " through tokens they issued"
                },
            )));
        }
        let mut theirs = rows::name_issuers(c, &requester)?
            .iter()
            .map(|n| identity::canonical(n))
            .collect::<BTreeSet<_>>();
        theirs.remove(CLI);
        if credential.starts_with("slack:") {
            // A Slack click approves with the approver role the name holds through its broker
            // tokens: those tokens obey the API's rule, so one the requester (or anyone in their
            // issuer chain) controls cannot qualify the vote, and the controllers of those that do
            // control the vote ([`slack_token_controllers`]).
            let qualified = slack_token_controllers(c, &origin.actor, Some(&now), &requester)?;
            if let Some(qualified) = qualified {
                if qualified.is_empty() {
                    return Err(Error::Forbidden(format!(
                        "this vote ({credential}, named {}) takes its approver role from tokens of {} \
                         that {requester}, who requested this share, controls (issued by them or by \
                         whoever issued their tokens): a token its requester issued cannot approve the \
                         request, from Slack either. The name needs an approver token issued by \
                         someone else (or by the command line), or approve with another identity",
                        origin.actor, origin.actor,
                    )));
                }
                voter.extend(qualified);
            }
        }
        let common: Vec<&String> = voter.intersection(&theirs).collect();
        if !common.is_empty() {
            return Err(Error::Forbidden(format!(
                "{} issued the tokens of {requester}, who requested this share, and {} this \
                         vote ({credential}, named {}): whoever issues a token can act as its holder, \
                         so the requester's issuers cannot approve the request. Approve with a token \
                         issued by someone else (or by the command line), or with an OIDC identity",
                join(&common),
                if common
                    .iter()
                    .any(|n| **n == identity::canonical(&origin.actor))
                {
                    "would cast"
                } else {
                    "issued the token (directly or through tokens they issued) casting"
                },
                origin.actor,
            )));
        }
        Some(voter)
    } else {
        None
    };
    if share.status != ShareStatus::Pending {
        return Err(Error::bad_transition(verb, share.status, "pending"));
    }
    if decision == Decision::Approve {
        refuse_ended(share, now_t)?;
    }
    Ok(voter)
}

/// [`decide`] inside the caller's write transaction.
fn decide_in(
    c: &Tx<'_>,
    origin: &Origin,
    ballot: &Ballot,
    share_id: ShareId,
    now_t: OffsetDateTime,
    notify: bool,
) -> Result<Share> {
    let now = fmt_time(now_t);
    let Ballot {
        credential,
        issued_by,
        decision,
        comment,
        ..
    } = ballot;
    let decision = *decision;
    let share = load(c, share_id)?;
    let voter = authorize_vote(c, origin, ballot, &share, now_t)?;
    let d = decision.as_str();
    let voted = share
        .approvals
        .iter()
        .any(|v| identity::same(&v.approver, &origin.actor));
    if voted
        || !rows::insert_vote(
            c,
            &rows::NewVote {
                share_id: share.id,
                approver: &origin.actor,
                decision,
                comment: comment.as_deref(),
                credential,
                issued_by: issued_by.as_deref(),
                at: &now,
            },
        )?
    {
        return Err(already_voted(origin, &share));
    }
    // The quorum counts independent controllers: a vote that one of the approvers before it
    // could have cast (their controllers meet) is refused, so the approvals recorded are
    // pairwise independent and each counts once.
    if let Some(voter) = &voter {
        for v in share
            .approvals
            .iter()
            .filter(|v| v.decision == Decision::Approve)
        {
            let cred = v.credential.as_deref().filter(|c| !c.starts_with("oidc:"));
            let mut prior = controllers(c, &v.approver, cred)?;
            prior.extend(slack_controllers(
                c,
                v.credential.as_deref().unwrap_or_default(),
                v.issued_by.as_deref(),
            )?);
            if v.credential
                .as_deref()
                .is_some_and(|c| c.starts_with("slack:"))
            {
                let requester = identity::canonical(&share.requested_by);
                prior.extend(
                    // Every approver or admin token the name ever held, not only those live now:
                    // the one that qualified this vote may have been revoked or expired since, and
                    // its issuer must still count as this vote's controller.
                    slack_token_controllers(c, &v.approver, None, &requester)?.unwrap_or_default(),
                );
            }
            let common: Vec<&String> = voter.intersection(&prior).collect();
            if !common.is_empty() {
                return Err(Error::Conflict {
                    detail: format!(
                        "{} could have cast both this vote (named {}) and the approval of {} \
                                 already recorded: whoever issues a token can act as its holder, so the \
                                 same controller cannot vote twice and this vote was not recorded. The \
                                 share needs an approver whose token was issued by someone else (or by \
                                 the command line), or an OIDC identity",
                        join(&common),
                        origin.actor,
                        v.approver,
                    ),
                    current_status: Some(share.status),
                    existing_id: None,
                });
            }
        }
    }
    crate::metrics::metrics()
        .votes
        .get_or_create(&crate::metrics::Kind { kind: d.to_owned() })
        .inc();
    // Distinct people: votes recorded before names were canonical may differ in case only.
    let approvals = approving_people(
        &share,
        (decision == Decision::Approve).then_some(&*origin.actor),
    );
    let (action, new_status) = match decision {
        Decision::Reject => ("share.rejected", Some(ShareStatus::Rejected)),
        Decision::Approve if approvals >= share.approvals_required => {
            ("share.approved", Some(ShareStatus::Approved))
        }
        Decision::Approve => ("share.approval_recorded", None),
    };
    let details = json!({
        "decision": d,
        "comment": comment,
        "credential": credential,
        "issued_by": issued_by,
        "approvals": approvals,
        "approvals_required": share.approvals_required,
        "from": share.status,
        "to": new_status.unwrap_or(share.status),
    });
    let Some(to) = new_status else {
        let id = share.id;
        audit::append(c, &origin.event(&now, action, Some(id), details))?;
        return load(c, id);
    };
    let reason = (decision == Decision::Reject)
        .then_some(comment.as_deref())
        .flatten();
    // The outbox event is named after the new status (`share.approved`, `share.rejected`).
    let by = format!("by {}", origin.actor);
    transition(
        c,
        Transition {
            reason,
            notice: notify.then_some((action, by.as_str())),
            ..origin.transition(&now, share.id, &share, to, action, details)
        },
    )
}

/// 409 when the pending `share` would be approved at or after its own expiry (`now_t`).
fn refuse_ended(share: &Share, now_t: OffsetDateTime) -> Result<()> {
    if share.expires_at <= utc_seconds(now_t) {
        return Err(Error::Conflict {
            detail: format!(
                "the share's access would have ended at {}; request a new share",
                fmt_time(share.expires_at)
            ),
            current_status: Some(share.status),
            existing_id: None,
        });
    }
    Ok(())
}

/// The command line's name as an issuer: trusted (SECURITY.md), so never a controller.
const CLI: &str = "cli";

/// Who could cast a vote as `name` with the broker token `token` (`None`: an OIDC identity, or a vote
/// recorded before credentials were): the name and, for a broker token, everyone in its issuer chain,
/// in canonical form and without the command line.
fn controllers(c: &Tx<'_>, name: &str, token: Option<&str>) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::from([identity::canonical(name)]);
    if let Some(id) = token {
        set.extend(
            rows::token_issuers(c, id)?
                .iter()
                .map(|n| identity::canonical(n)),
        );
    }
    set.remove(CLI);
    Ok(set)
}

/// Who else controls a vote cast from Slack (`credential` `slack:<team>/<user>`): the Slack user itself,
/// whichever name it is linked to at the time (so relinking one Slack user to a second name cannot
/// count it twice), the admin who set the link (`linker`), who chose that name, and whoever issued
/// that admin's tokens (who can act as the admin: a requester who issued an admin token to a stand-in
/// cannot have the stand-in link the requester's own Slack user). Nothing for any other credential.
fn slack_controllers(c: &Tx<'_>, credential: &str, linker: Option<&str>) -> Result<Vec<String>> {
    if !credential.starts_with("slack:") {
        return Ok(Vec::new());
    }
    let mut out = vec![credential.to_owned()];
    if let Some(linker) = linker.map(identity::canonical).filter(|n| n != CLI) {
        out.extend(
            rows::name_issuers(c, &linker)?
                .iter()
                .map(|n| identity::canonical(n))
                .filter(|n| n != CLI),
        );
        out.push(linker);
    }
    Ok(out)
}

/// Who controls the approver role a Slack vote as `name` takes from the name's broker tokens: the
/// controllers ([`controllers`]) of its approver and admin tokens that `requester` does not control
/// (neither the requester nor anyone who issued the requester's tokens is among them), merged. The
/// tokens live at `now` when it is given (a click being decided), else every one the name ever held
/// (a vote already recorded, whose qualifying token may have gone since). Empty when every such token
/// is the requester's; `None` for an `oidc:` name (its role comes from an OIDC sign-in, which no broker
/// name issues).
fn slack_token_controllers(
    c: &Tx<'_>,
    name: &str,
    now: Option<&str>,
    requester: &str,
) -> Result<Option<BTreeSet<String>>> {
    if name.starts_with("oidc:") {
        return Ok(None);
    }
    let mut theirs = rows::name_issuers(c, requester)?
        .iter()
        .map(|n| identity::canonical(n))
        .collect::<BTreeSet<_>>();
    theirs.insert(identity::canonical(requester));
    theirs.remove(CLI);
    let mut out = BTreeSet::new();
    let name_c = identity::canonical(name);
    let tokens = match now {
        Some(now) => crate::store::slack::live_tokens(c, &name_c, now)?,
        None => crate::store::slack::tokens_ever(c, &name_c)?,
    };
    for (id, role) in tokens {
        if !matches!(role.parse::<Role>(), Ok(Role::Approver | Role::Admin)) {
            continue;
        }
        let held = controllers(c, name, Some(&id))?;
        if held.is_disjoint(&theirs) {
            out.extend(held);
        }
    }
    Ok(Some(out))
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Withdraws a pending share. Its requester may; an admin may cancel anyone's.
pub(crate) async fn cancel(
    app: &App,
    caller: &Caller,
    origin: Origin,
    share_id: ShareId,
) -> Result<Share> {
    let now = fmt_time(app.clock.now());
    let is_admin = caller.role == crate::domain::Role::Admin;
    app.store
        .write(move |c| {
            let share = load(c, share_id)?;
            if !identity::same(&share.requested_by, &origin.actor) && !is_admin {
                return Err(Error::Forbidden(format!(
                    "only the requester ({}) or an admin can cancel this share",
                    share.requested_by
                )));
            }
            if share.status != ShareStatus::Pending {
                return Err(Error::bad_transition("cancel", share.status, "pending"));
            }
            transition(
                c,
                origin.transition(
                    &now,
                    share.id,
                    &share,
                    ShareStatus::Cancelled,
                    "share.cancelled",
                    json!({"from": share.status, "to": ShareStatus::Cancelled}),
                ),
            )
        })
        .await
}

/// What a refused mutation was aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    /// A share (its canonical id goes in the row's `share_id`).
    Share,
    /// A bearer token.
    Token,
    /// A consumer principal.
    Principal,
    /// A Slack user's link to a broker identity.
    SlackLink,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Share => "share",
            Resource::Token => "token",
            Resource::Principal => "principal",
            Resource::SlackLink => "slack_link",
        }
    }
}

/// Records a refused mutation (403, 409) of a share, token or principal as `<resource>.refused`,
/// coalesced per caller ([`crate::refusals`]): the same refusal is written once a minute and at most
/// a few per caller; the rest are counted, and the next row written says how many were not.
pub(crate) async fn record_refusal(
    app: &App,
    origin: Origin,
    resource: Resource,
    target: Option<String>,
    attempted: &str,
    err: &Error,
) -> Result<()> {
    let now_t = app.clock.now();
    let action = format!("{}.refused", resource.name());
    let Some(unaudited) = app.refusals.admit(
        &origin.actor,
        &format!("{action}:{attempted}"),
        target.as_deref().unwrap_or(""),
        now_t.unix_timestamp(),
    ) else {
        crate::metrics::metrics().refusals_unaudited.inc();
        return Ok(());
    };
    let now = fmt_time(now_t);
    let mut details = json!({
        "attempted": attempted,
        "status": err.status(),
        "reason": err.to_string(),
    });
    if unaudited > 0 {
        details["unaudited_before"] = unaudited.into();
    }
    let share_id = match resource {
        // The handlers pass a share's id in its canonical form; anything else names no share.
        Resource::Share => target.and_then(|t| ShareId::parse(&t).ok()),
        Resource::Token | Resource::Principal | Resource::SlackLink => {
            if let Some(t) = target {
                details["target"] = t.into();
            }
            None
        }
    };
    app.store
        .write(move |c| {
            audit::append(c, &origin.event(&now, &action, share_id, details))?;
            Ok(())
        })
        .await
}

/// Asks for an active (or drifted) share to be revoked: it becomes `revoking`; the applier removes its
/// statements. Its requester, an approver or an admin may.
pub(crate) async fn request_revoke(
    app: &App,
    caller: &Caller,
    origin: Origin,
    share_id: ShareId,
    reason: String,
) -> Result<Share> {
    let now = fmt_time(app.clock.now());
    let role = caller.role;
    app.store
        .write(move |c| {
            let share = load(c, share_id)?;
            if role == crate::domain::Role::Requester
                && !identity::same(&share.requested_by, &origin.actor)
            {
                return Err(Error::Forbidden(format!(
                    "only the requester ({}), an approver or an admin can revoke this share",
                    share.requested_by
                )));
            }
            if !matches!(share.status, ShareStatus::Active | ShareStatus::Drifted) {
                return Err(Error::bad_transition(
                    "revoke",
                    share.status,
                    "active or drifted",
                ));
            }
            let details =
                json!({"reason": reason, "from": share.status, "to": ShareStatus::Revoking});
            transition(
                c,
                Transition {
                    reason: Some(&reason),
                    ..origin.transition(
                        &now,
                        share.id,
                        &share,
                        ShareStatus::Revoking,
                        "share.revoke_requested",
                        details,
                    )
                },
            )
        })
        .await
}

/// Queues a failed share to be applied again (admin).
pub(crate) async fn retry(app: &App, origin: Origin, share_id: ShareId) -> Result<Share> {
    let now_t = utc_seconds(app.clock.now());
    let now = fmt_time(now_t);
    app.store
        .write(move |c| {
            let share = load(c, share_id)?;
            if share.status != ShareStatus::Failed {
                return Err(Error::bad_transition("retry", share.status, "failed"));
            }
            refuse_unjustified(c, &share, "retried")?;
            if share.expires_at <= now_t {
                return Err(Error::Conflict {
                    detail: format!("the share's access ended at {}; request a new share", fmt_time(share.expires_at)),
                    current_status: Some(share.status),
                    existing_id: None,
                });
            }
            transition(
                c,
                origin.transition(
                    &now,
                    share.id,
                    &share,
                    ShareStatus::Approved,
                    "share.retry",
                    json!({"previous_error": share.last_error, "from": share.status, "to": ShareStatus::Approved}),
                ),
            )
        })
        .await
}

/// Records an admin's request to repair a drifted share (the applier re-applies it).
pub(crate) async fn request_repair(app: &App, origin: Origin, share_id: ShareId) -> Result<Share> {
    let now = fmt_time(app.clock.now());
    app.store
        .write(move |c| {
            let share = load(c, share_id)?;
            if share.status != ShareStatus::Drifted {
                return Err(Error::bad_transition("repair", share.status, "drifted"));
            }
            audit::append(
                c,
                &origin.event(
                    &now,
                    "share.repair_requested",
                    Some(share.id),
                    json!({"problems": share.last_error}),
                ),
            )?;
            Ok(share)
        })
        .await
}

/// Opens a console session (issue 20) and audits it (`console.signed_in`, with the token's public id and
/// the session's end; never the session id or its hash) in one transaction.
pub(crate) async fn open_console_session(
    app: &App,
    origin: Origin,
    row: crate::store::sessions::SessionRow,
) -> Result<()> {
    let now = fmt_time(app.clock.now());
    app.store
        .write(move |c| {
            crate::store::sessions::insert_session(c, &row, &now)?;
            audit::append(
                c,
                &origin.event(
                    &now,
                    "console.signed_in",
                    None,
                    json!({"token_id": row.token_id, "expires_at": row.expires_at}),
                ),
            )?;
            Ok(())
        })
        .await
}

/// Ends a console session at sign-out and audits it (`console.signed_out`) in one transaction.
pub(crate) async fn end_console_session(app: &App, origin: Origin, id_hash: String) -> Result<()> {
    let now = fmt_time(app.clock.now());
    app.store
        .write(move |c| {
            if crate::store::sessions::delete_session(c, &id_hash)? {
                audit::append(
                    c,
                    &origin.event(&now, "console.signed_out", None, json!({})),
                )?;
            }
            Ok(())
        })
        .await
}

// ---------------------------------------------------------------------------------------------------
// Issue 21: break-glass shares, and approving from Slack.

/// The notification of a new pending share: with `slack_buttons` (a Slack signing secret is set), it
/// carries Approve and Reject buttons (Block Kit) that Slack sends back to `/v1/slack/interactions`.
fn announce_pending(
    c: &Tx<'_>,
    notify: bool,
    slack_buttons: bool,
    share: &Share,
    now: &str,
) -> Result<()> {
    if !notify {
        return Ok(());
    }
    let detail = format!(
        "requested by {}: {}",
        share.requested_by, share.justification
    );
    let blocks = slack_buttons.then(|| {
        crate::slack::decision_blocks(
            &share.id.to_string(),
            share.secret_arn.as_str(),
            share.principal_arn.as_str(),
            &detail,
        )
    });
    crate::store::outbox::enqueue_with_blocks(c, "share.pending", share, &detail, now, blocks)
}

/// A request to break the glass: the caller's role and the reason.
#[derive(Debug, Clone)]
pub(crate) struct Glass {
    /// The caller's role (checked against `break_glass_roles`).
    pub(crate) role: crate::domain::Role,
    /// Why (required).
    pub(crate) reason: String,
}

/// What breaking the glass needs from the configuration.
#[derive(Debug, Clone)]
struct GlassRules {
    roles: Vec<crate::domain::Role>,
    max_ttl: std::time::Duration,
    daily_limit: u64,
    org_shares: bool,
}

impl GlassRules {
    fn of(app: &App) -> Self {
        Self {
            roles: app.config.break_glass_roles.0.clone(),
            max_ttl: app.config.break_glass_max_ttl.0,
            daily_limit: app.config.break_glass_daily_limit.0 as u64,
            org_shares: app.config.break_glass_org_shares.0,
        }
    }
}

/// The window of the per-person limit.
const GLASS_WINDOW: time::Duration = time::Duration::days(1);

/// Breaks the glass on `share` (pending, requested by the caller), inside the caller's transaction:
/// checks the role and the per-person limit, cuts the expiry to `break_glass_max_ttl`, records the
/// reason, and approves it without the quorum through [`transition`] (audited as `share.break_glass`,
/// announced at once as the webhook event `share.break_glass`).
fn break_glass_in(
    c: &Tx<'_>,
    origin: &Origin,
    glass: &Glass,
    share: &Share,
    rules: &GlassRules,
    now_t: OffsetDateTime,
    notify: bool,
) -> Result<Share> {
    if rules.roles.is_empty() {
        return Err(Error::Forbidden(
            "break-glass is off on this broker: an admin enables it with the setting \
             break_glass_roles (e.g. requester,admin); until then ask approvers to approve the share"
                .into(),
        ));
    }
    if !rules.roles.contains(&glass.role) {
        let names: Vec<&str> = rules.roles.iter().map(|r| r.as_str()).collect();
        return Err(Error::Forbidden(format!(
            "break-glass is allowed to the {} role(s) (setting break_glass_roles); {} has the {} role: \
             ask approvers to approve the share",
            names.join(", "),
            origin.actor,
            glass.role
        )));
    }
    if !identity::same(&share.requested_by, &origin.actor) {
        return Err(Error::Forbidden(format!(
            "only the requester of a share ({}) can break the glass on it",
            share.requested_by
        )));
    }
    if share.status != ShareStatus::Pending {
        return Err(Error::bad_transition(
            "break the glass on",
            share.status,
            "pending",
        ));
    }
    if share.principal_arn.kind().is_org() && !rules.org_shares {
        return Err(Error::Conflict {
            detail: format!(
                "{} is an organization or OU: a share with it reaches every account of it and needs \
                 more approvals (setting org_share_extra_approvals), so break-glass is refused on it \
                 (setting break_glass_org_shares = false): ask approvers to approve the share, or \
                 request a break-glass share for the one account or role that needs the secret",
                share.principal_arn.as_str()
            ),
            current_status: Some(share.status),
            existing_id: None,
        });
    }
    let now_t = utc_seconds(now_t);
    let now = fmt_time(now_t);
    refuse_ended(share, now_t)?;
    let who = identity::canonical(&origin.actor);
    let since = fmt_time(now_t - GLASS_WINDOW);
    let used = crate::store::break_glass::count_since(c, &who, &since)?;
    if used >= rules.daily_limit {
        return Err(Error::TooMany(format!(
            "{} has broken the glass {used} time(s) in the last 24 hours, the most one person may \
             (setting break_glass_daily_limit = {}): ask approvers to approve the share",
            origin.actor, rules.daily_limit
        )));
    }
    let max = time::Duration::try_from(rules.max_ttl).unwrap_or(GLASS_WINDOW);
    let ends = share.expires_at.min(utc_seconds(now_t + max));
    let id = share.id;
    crate::store::break_glass::insert(c, id, &who, &glass.reason, &fmt_time(ends), &now)?;
    let detail = format!(
        "BREAK-GLASS by {} (no quorum; needs a review), reason: {}",
        origin.actor, glass.reason
    );
    let details = json!({
        "break_glass": true,
        "reason": glass.reason,
        "requested_by": share.requested_by,
        "expires_at": fmt_time(ends),
        "requested_expires_at": fmt_time(share.expires_at),
        "approvals_required": share.approvals_required,
        "from": share.status,
        "to": ShareStatus::Approved,
    });
    transition(
        c,
        Transition {
            reason: Some("break-glass: approved without its quorum, pending review"),
            notice: notify.then_some(("share.break_glass", detail.as_str())),
            ..origin.transition(
                &now,
                id,
                share,
                ShareStatus::Approved,
                "share.break_glass",
                details,
            )
        },
    )
}

/// `POST /v1/shares/{id}/break-glass`: the requester of a pending share has it approved without the
/// quorum (see [`break_glass_in`]).
pub(crate) async fn break_glass(
    app: &App,
    origin: Origin,
    share_id: ShareId,
    glass: Glass,
) -> Result<Share> {
    let now_t = app.clock.now();
    let rules = GlassRules::of(app);
    let notify = app.notify_enabled();
    app.store
        .write(move |c| {
            let share = load(c, share_id)?;
            break_glass_in(c, &origin, &glass, &share, &rules, now_t, notify)
        })
        .await
}

/// A reviewer's finding on a break-glass share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReviewOutcome {
    /// The emergency was real.
    Justified,
    /// It was not: the share is revoked at once if it is still active.
    Unjustified,
}

impl ReviewOutcome {
    /// As stored and shown.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReviewOutcome::Justified => "justified",
            ReviewOutcome::Unjustified => "unjustified",
        }
    }
}

/// Records the review of a break-glass share by an approver who is not its requester (nor controls
/// the requester's tokens, nor is controlled by them). "unjustified" revokes the share at once when it
/// is active or drifted, and ends it (`expired`) when it is approved but not yet applied; it is final:
/// a share so reviewed whose apply failed is never retried ([`refuse_unjustified`]).
pub(crate) async fn review_break_glass(
    app: &App,
    caller: &Caller,
    origin: Origin,
    share_id: ShareId,
    outcome: ReviewOutcome,
    comment: Option<String>,
) -> Result<Share> {
    let now = fmt_time(app.clock.now());
    let credential = caller.credential.clone();
    let broker_token = caller.credential == caller.token_id;
    let notify = app.notify_enabled();
    app.store
        .write(move |c| {
            let share = load(c, share_id)?;
            let id = share.id;
            let Some(glass) = crate::store::break_glass::get(c, id)? else {
                return Err(Error::Conflict {
                    detail: format!("share {id} was not approved through break-glass: there is nothing to review"),
                    current_status: Some(share.status),
                    existing_id: None,
                });
            };
            if identity::same(&glass.requested_by, &origin.actor)
                || identity::same(&share.requested_by, &origin.actor)
            {
                return Err(Error::Forbidden(format!(
                    "{} broke the glass on this share and cannot review it: another approver must",
                    origin.actor
                )));
            }
            let requester = identity::canonical(&share.requested_by);
            let cred = broker_token.then_some(credential.as_str());
            let reviewer = controllers(c, &origin.actor, cred)?;
            let mut theirs = rows::name_issuers(c, &requester)?
                .iter()
                .map(|n| identity::canonical(n))
                .collect::<BTreeSet<_>>();
            theirs.insert(requester.clone());
            theirs.remove(CLI);
            if !reviewer.is_disjoint(&theirs) {
                return Err(Error::Forbidden(format!(
                    "the credential {credential} (named {}) is controlled by {requester}, who broke the \
                     glass, or by whoever issued their tokens: the review needs an approver independent \
                     of the requester",
                    origin.actor
                )));
            }
            if !crate::store::break_glass::record_review(
                c,
                id,
                &identity::canonical(&origin.actor),
                outcome.as_str(),
                comment.as_deref(),
                &now,
            )? {
                return Err(Error::Conflict {
                    detail: format!(
                        "share {id} was already reviewed ({} by {})",
                        glass.outcome.as_deref().unwrap_or("?"),
                        glass.reviewed_by.as_deref().unwrap_or("?")
                    ),
                    current_status: Some(share.status),
                    existing_id: None,
                });
            }
            audit::append(
                c,
                &origin.event(
                    &now,
                    "share.break_glass_reviewed",
                    Some(id),
                    json!({
                        "break_glass": true,
                        "outcome": outcome.as_str(),
                        "comment": comment,
                        "credential": credential,
                        "reason": glass.reason,
                        "requested_by": glass.requested_by,
                    }),
                ),
            )?;
            if outcome == ReviewOutcome::Justified {
                return load(c, id);
            }
            let why = format!("break-glass reviewed unjustified by {}", origin.actor);
            let to = match share.status {
                ShareStatus::Active | ShareStatus::Drifted => ShareStatus::Revoking,
                ShareStatus::Approved => ShareStatus::Expired,
                _ => return load(c, id),
            };
            let action = if to == ShareStatus::Revoking {
                "share.revoke_requested"
            } else {
                "share.expired"
            };
            let details = json!({"reason": why, "break_glass": true, "from": share.status, "to": to});
            transition(
                c,
                Transition {
                    reason: Some(&why),
                    notice: notify.then_some((action, why.as_str())),
                    ..origin.transition(&now, id, &share, to, action, details)
                },
            )
        })
        .await
}

/// 409 when `share` is a break-glass share reviewed `unjustified`: the review is final, so the share
/// is never applied again (a failed one is not retried: that would grant what the review refused).
fn refuse_unjustified(c: &Tx<'_>, share: &Share, verb: &str) -> Result<()> {
    let id = share.id;
    match crate::store::break_glass::get(c, id)? {
        Some(g) if g.outcome.as_deref() == Some(ReviewOutcome::Unjustified.as_str()) => {
            Err(Error::Conflict {
                detail: format!(
                    "share {id} broke the glass and was reviewed unjustified by {} at {}: the review \
                     is final and the share cannot be {verb}; request a new share",
                    g.reviewed_by.as_deref().unwrap_or("?"),
                    g.reviewed_at.as_deref().unwrap_or("?"),
                ),
                current_status: Some(share.status),
                existing_id: None,
            })
        }
        _ => Ok(()),
    }
}

/// The Slack user behind a callback, as the broker sees it: the linked broker name deciding with the
/// `role` that name holds now (see [`slack_decider_role`]), its credential `slack:<team>/<user>`
/// (recorded with the vote, like `oidc:<sub>`).
fn slack_caller(link: &SlackLink, role: Role) -> Caller {
    Caller {
        token_id: format!("slack-link:{}/{}", link.team_id, link.user_id),
        name: link.name.clone(),
        role,
        credential: format!("slack:{}/{}", link.team_id, link.user_id),
        // The admin who set the link chose whom this Slack user votes as (and can relink it): like a
        // token's issuer, they control the vote.
        issued_by: Some(link.created_by.clone()),
    }
}

/// The role a linked broker name decides with at `now`, if it may decide at all: approver or admin,
/// held through a live credential, checked at each click (a link grants no role of its own).
///
/// - A broker name: its broker tokens that are neither revoked nor expired (admin if one of them is
///   admin). Revoking the name's approver tokens stops its Slack clicks at once.
/// - An `oidc:` name: the broker stores no role of an OIDC identity (a JWT's roles claim is mapped on
///   each request, and the JWT itself never reaches the broker through Slack), so the role is taken
///   from where the broker last verified one and still holds it: a console session opened through
///   OIDC sign-in as that name that has not ended (nor been signed out), its roles claim mapped with
///   the `oidc_role_map` in force now, exactly as the console maps it on each of its requests
///   (`oidc` is `None` when OIDC sign-in is off: no `oidc:` name may decide then).
fn slack_decider_role(
    c: &Tx<'_>,
    name: &str,
    now: &str,
    oidc: Option<&crate::auth::oidc::Oidc>,
) -> Result<Option<Role>> {
    let roles: Vec<Role> = if name.starts_with("oidc:") {
        let Some(oidc) = oidc else {
            return Ok(None);
        };
        crate::store::slack::live_oidc_role_values(c, name, now)?
            .iter()
            .filter_map(|v| serde_json::from_str::<Vec<String>>(v).ok())
            .filter_map(|values| oidc.map_roles(&values).ok())
            .collect()
    } else {
        crate::store::slack::live_tokens(c, name, now)?
            .iter()
            .filter_map(|(_, r)| r.parse().ok())
            .collect()
    };
    Ok([Role::Admin, Role::Approver]
        .into_iter()
        .find(|r| roles.contains(r)))
}

/// What a Slack click came to: the link it was decided through (`None`: the Slack user is not linked),
/// and the decision or the refusal.
pub(crate) struct SlackVote {
    /// The link read in the vote's transaction.
    pub(crate) link: Option<SlackLink>,
    /// The share as decided, or why not.
    pub(crate) result: Result<Share>,
}

/// A click on a pending share's Approve or Reject button by the Slack user `team_id`/`user_id`: in one
/// write transaction, the user's link is read, the linked name's role checked
/// ([`slack_decider_role`]), and the decision made through [`decide_in`], as `POST
/// /v1/shares/{id}/approve` and `/reject` make it. So a click racing an unlink (or a revoke of the
/// name's tokens) either decides before it, with the link and role it had, or is refused after it.
pub(crate) async fn decide_from_slack(
    app: &App,
    request_id: Option<String>,
    team_id: String,
    user_id: String,
    share_id: ShareId,
    decision: Decision,
) -> SlackVote {
    let now_t = app.clock.now();
    let notify = app.notify_enabled();
    let oidc = match (&app.oidc_login, app.auth.oidc()) {
        (Some(_), Some(o)) => Some(o.clone()),
        _ => None,
    };
    let click = SlackClick {
        team_id,
        user_id,
        request_id,
        decision,
        now_t,
        oidc,
    };
    let click = Arc::new(click);
    if decision == Decision::Approve {
        // Authorized as the write would authorize it (the link, its role, the vote's checks), then
        // the policies' room as for any final approval, within Slack's answer time.
        let pre = click.clone();
        let checked = app
            .store
            .read(move |c| {
                let (link, origin, ballot) = slack_ballot(c, &pre, None)?;
                let share = authorized_share(c, &origin, &ballot, share_id, pre.now_t)?;
                Ok((link, share))
            })
            .await;
        // A vote the checks refuse goes on to the write, which refuses it the same way (and says
        // which link it read).
        if let Ok((link, share)) = checked
            && let Err(e) = room_within(app, &share, &link.name, SLACK_ROOM_TIMEOUT).await
        {
            return SlackVote {
                link: Some(link),
                result: Err(e),
            };
        }
    }
    let seen: Arc<Mutex<Option<SlackLink>>> = Arc::default();
    let read = seen.clone();
    let result = app
        .store
        .write(move |c| {
            let (_, origin, ballot) = slack_ballot(c, &click, Some(&read))?;
            decide_in(c, &origin, &ballot, share_id, click.now_t, notify)
        })
        .await;
    let link = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
    SlackVote { link, result }
}

/// How long a Slack approval waits for AWS for its room check: Slack wants its answer within 3 s.
const SLACK_ROOM_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// A click as [`decide_from_slack`] got it.
struct SlackClick {
    team_id: String,
    user_id: String,
    request_id: Option<String>,
    decision: Decision,
    now_t: OffsetDateTime,
    oidc: Option<Arc<crate::auth::oidc::Oidc>>,
}

/// The link of the clicking Slack user, checked ([`slack_decider_role`]), and the origin and ballot of
/// its vote.
fn slack_ballot(
    c: &Tx<'_>,
    click: &SlackClick,
    seen: Option<&Mutex<Option<SlackLink>>>,
) -> Result<(SlackLink, Origin, Ballot)> {
    let SlackClick {
        team_id,
        user_id,
        request_id,
        decision,
        now_t,
        oidc,
    } = click;
    let Some(link) = crate::store::slack::link(c, team_id, user_id)? else {
        return Err(Error::Forbidden(format!(
            "Slack user {user_id} of team {team_id} is not linked to a broker identity: an \
             admin links it (secret-broker slack link --team {team_id} --user {user_id} \
             --name NAME)"
        )));
    };
    if let Some(seen) = seen {
        *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
    }
    let Some(role) = slack_decider_role(c, &link.name, &fmt_time(*now_t), oidc.as_deref())? else {
        return Err(Error::Forbidden(format!(
            "{} (the broker name Slack user {user_id} of team {team_id} is linked to) holds \
             no live approver or admin credential: a broker token with that role, neither \
             revoked nor expired, or for an oidc: name a console session signed in through \
             OIDC whose roles claim maps to it. Only approvers decide from Slack",
            link.name
        )));
    };
    let caller = slack_caller(&link, role);
    let origin = Origin::of(&caller, request_id.clone());
    let comment =
        (*decision == Decision::Reject).then(|| format!("rejected from Slack by {}", link.name));
    let ballot = Ballot::of(&caller, *decision, comment);
    Ok((link, origin, ballot))
}

/// Links a Slack user to a broker name (admin, API or command line; the name is stored in its canonical
/// form), audited as `slack.link_set`.
pub(crate) async fn set_slack_link(
    store: &crate::store::Store,
    origin: Origin,
    mut link: crate::store::slack::SlackLink,
) -> Result<crate::store::slack::SlackLink> {
    link.name = identity::canonical(&link.name);
    store
        .write(move |c| {
            let replaced = crate::store::slack::set_link(c, &link)?;
            audit::append(
                c,
                &origin.event(
                    &link.created_at,
                    "slack.link_set",
                    None,
                    json!({"team_id": link.team_id, "user_id": link.user_id, "name": link.name, "replaced": replaced}),
                ),
            )?;
            Ok(link)
        })
        .await
}

/// Removes a Slack user's link, audited as `slack.link_removed`; 404 when there is none.
pub(crate) async fn remove_slack_link(
    store: &crate::store::Store,
    origin: Origin,
    team_id: String,
    user_id: String,
    now: String,
) -> Result<()> {
    store
        .write(move |c| {
            if !crate::store::slack::delete_link(c, &team_id, &user_id)? {
                return Err(Error::NotFound(format!(
                    "no link for Slack user {user_id} of team {team_id}"
                )));
            }
            audit::append(
                c,
                &origin.event(
                    &now,
                    "slack.link_removed",
                    None,
                    json!({"team_id": team_id, "user_id": user_id}),
                ),
            )?;
            Ok(())
        })
        .await
}

/// Records a refused Slack callback (bad, old or replayed signature) as `slack.refused`, coalesced like
/// refused authentications ([`crate::refusals`]): anyone can send them.
pub(crate) async fn record_slack_refusal(app: &App, why: &str, detail: String) -> Result<()> {
    let now_t = app.clock.now();
    let Some(unaudited) = app.refusals.admit(
        "anonymous",
        &format!("slack.refused:{why}"),
        "",
        now_t.unix_timestamp(),
    ) else {
        crate::metrics::metrics().refusals_unaudited.inc();
        return Ok(());
    };
    let now = fmt_time(now_t);
    let mut details = json!({"why": why, "detail": detail, "status": 401});
    if unaudited > 0 {
        details["unaudited_before"] = unaudited.into();
    }
    app.store
        .write(move |c| {
            audit::append(
                c,
                &NewEvent {
                    at: &now,
                    actor: "anonymous",
                    action: "slack.refused",
                    share_id: None,
                    request_id: None,
                    details,
                },
            )?;
            Ok(())
        })
        .await
}
