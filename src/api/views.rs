//! What the API shows of the domain: each view is built from a domain type (`From`), and carries the
//! OpenAPI schema; the domain types carry neither (as crates.io's `views.rs`). The JSON is the one the
//! API has always served: ids and ARNs as text, times as RFC 3339 UTC with whole seconds, actions as
//! IAM action names.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::domain::{ActionSet, Role, ShareId, ShareStatus};
use crate::policy::arn::{KmsKeyArn, PrincipalArn, PrincipalKind, SecretArn};
use crate::store::rows;

/// One approver's vote.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Approval)]
pub(crate) struct ApprovalView {
    /// The approver's name.
    pub(crate) approver: String,
    /// `approve` or `reject`.
    #[schema(example = "approve")]
    pub(crate) decision: String,
    /// Their comment.
    pub(crate) comment: Option<String>,
    /// When.
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    #[schema(value_type = String)]
    pub(crate) at: OffsetDateTime,
    /// The credential that cast the vote: a broker token's id, or `oidc:<sub>` for a JWT (absent for
    /// votes recorded before the broker kept it).
    pub(crate) credential: Option<String>,
    /// For a broker token, who created it (`cli` for the command line).
    pub(crate) issued_by: Option<String>,
}

impl From<rows::Approval> for ApprovalView {
    fn from(a: rows::Approval) -> Self {
        ApprovalView {
            approver: a.approver,
            decision: a.decision.as_str().to_owned(),
            comment: a.comment,
            at: a.at,
            credential: a.credential,
            issued_by: a.issued_by,
        }
    }
}

/// A share request and its state.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Share)]
pub(crate) struct ShareView {
    /// Id.
    #[schema(value_type = String)]
    pub(crate) id: ShareId,
    /// Where the share is in its life.
    pub(crate) status: ShareStatus,
    /// Why it is in that status, when there is more to say (rejection comment, failure).
    pub(crate) status_reason: Option<String>,
    /// The secret.
    #[schema(
        value_type = String,
        example = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf"
    )]
    pub(crate) secret_arn: SecretArn,
    /// The consumer principal's registration id.
    pub(crate) principal_id: String,
    /// The consumer principal.
    #[schema(value_type = String, example = "arn:aws:iam::444455556666:role/app-reader")]
    pub(crate) principal_arn: PrincipalArn,
    /// IAM actions granted.
    #[schema(value_type = Vec<String>, example = json!(["secretsmanager:GetSecretValue"]))]
    pub(crate) actions: ActionSet,
    /// Version stage the consumer is limited to; null means any stage.
    #[schema(example = "AWSCURRENT")]
    pub(crate) version_stage: Option<String>,
    /// Why the consumer needs it.
    pub(crate) justification: String,
    /// When access ends, RFC 3339 UTC.
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    #[schema(value_type = String)]
    pub(crate) expires_at: OffsetDateTime,
    /// Who asked.
    pub(crate) requested_by: String,
    /// Distinct approvals needed.
    pub(crate) approvals_required: u32,
    /// Votes so far.
    pub(crate) approvals: Vec<ApprovalView>,
    /// The full ARN of the secret's KMS key, once the share has been applied.
    #[schema(value_type = Option<String>)]
    pub(crate) key_arn: Option<KmsKeyArn>,
    /// The last failure applying or revoking the share, in words.
    pub(crate) last_error: Option<String>,
    /// Created, RFC 3339 UTC.
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    #[schema(value_type = String)]
    pub(crate) created_at: OffsetDateTime,
    /// Last change, RFC 3339 UTC.
    #[serde(serialize_with = "crate::domain::rfc3339::serialize")]
    #[schema(value_type = String)]
    pub(crate) updated_at: OffsetDateTime,
    /// True when the share was approved through break-glass, without its quorum: it needs a review
    /// (`POST /v1/shares/{id}/review`).
    pub(crate) break_glass: bool,
}

impl From<rows::Share> for ShareView {
    fn from(s: rows::Share) -> Self {
        ShareView {
            id: s.id,
            status: s.status,
            status_reason: s.status_reason,
            secret_arn: s.secret_arn,
            principal_id: s.principal_id,
            principal_arn: s.principal_arn,
            actions: s.actions,
            version_stage: s.version_stage,
            justification: s.justification,
            expires_at: s.expires_at,
            requested_by: s.requested_by,
            approvals_required: s.approvals_required,
            approvals: s.approvals.into_iter().map(ApprovalView::from).collect(),
            key_arn: s.key_arn,
            last_error: s.last_error,
            created_at: s.created_at,
            updated_at: s.updated_at,
            break_glass: s.break_glass,
        }
    }
}

/// Writes the JSON serde writes for `s`'s [`ShareView`] (field for field; a unit test compares them)
/// straight from the share, without building the view, and without serde's escaping loop for strings
/// that need none.
pub(crate) fn write_share(out: &mut super::json::JsonBuf, s: &rows::Share) {
    out.raw("{\"id\":\"");
    out.raw(&s.id.to_string());
    out.raw("\",\"status\":");
    out.str(s.status.as_str());
    out.raw(",\"status_reason\":");
    out.opt_str(s.status_reason.as_deref());
    out.raw(",\"secret_arn\":");
    out.str(&s.secret_arn);
    out.raw(",\"principal_id\":");
    out.str(&s.principal_id);
    out.raw(",\"principal_arn\":");
    out.str(&s.principal_arn);
    out.raw(",\"actions\":[");
    for (i, a) in s.actions.iter().enumerate() {
        if i > 0 {
            out.raw(",");
        }
        out.str(a.as_str());
    }
    out.raw("],\"version_stage\":");
    out.opt_str(s.version_stage.as_deref());
    out.raw(",\"justification\":");
    out.str(&s.justification);
    out.raw(",\"expires_at\":");
    out.time(s.expires_at);
    out.raw(",\"requested_by\":");
    out.str(&s.requested_by);
    out.raw(",\"approvals_required\":");
    out.uint(u64::from(s.approvals_required));
    out.raw(",\"approvals\":[");
    for (i, a) in s.approvals.iter().enumerate() {
        if i > 0 {
            out.raw(",");
        }
        out.raw("{\"approver\":");
        out.str(&a.approver);
        out.raw(",\"decision\":");
        out.str(a.decision.as_str());
        out.raw(",\"comment\":");
        out.opt_str(a.comment.as_deref());
        out.raw(",\"at\":");
        out.time(a.at);
        out.raw(",\"credential\":");
        out.opt_str(a.credential.as_deref());
        out.raw(",\"issued_by\":");
        out.opt_str(a.issued_by.as_deref());
        out.raw("}");
    }
    out.raw("],\"key_arn\":");
    out.opt_str(s.key_arn.as_deref());
    out.raw(",\"last_error\":");
    out.opt_str(s.last_error.as_deref());
    out.raw(",\"created_at\":");
    out.time(s.created_at);
    out.raw(",\"updated_at\":");
    out.time(s.updated_at);
    out.raw(",\"break_glass\":");
    out.bool(s.break_glass);
    out.raw("}");
}

impl From<&rows::Share> for ShareView {
    fn from(s: &rows::Share) -> Self {
        ShareView::from(s.clone())
    }
}

/// A registered consumer principal.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Principal)]
pub(crate) struct PrincipalView {
    /// Id.
    pub(crate) id: String,
    /// The consumer: an IAM ARN, or for an organization its id (`o-...`) and for an OU its path
    /// (`o-.../r-.../ou-.../`).
    #[schema(value_type = String, example = "arn:aws:iam::444455556666:role/app-reader")]
    pub(crate) arn: PrincipalArn,
    /// Its account; absent for an organization or OU.
    #[schema(example = "444455556666")]
    pub(crate) account_id: Option<String>,
    /// `user`, `role`, `account_root`, `organization` or `org_unit`.
    pub(crate) kind: PrincipalKind,
    /// Free text.
    pub(crate) description: Option<String>,
    /// Who registered it.
    pub(crate) created_by: String,
    /// When.
    pub(crate) created_at: String,
}

impl From<rows::Principal> for PrincipalView {
    fn from(p: rows::Principal) -> Self {
        PrincipalView {
            id: p.id,
            arn: p.arn,
            account_id: p.account_id,
            kind: p.kind,
            description: p.description,
            created_by: p.created_by,
            created_at: p.created_at,
        }
    }
}

/// A token as an admin sees it: never its secret or hash.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TokenInfo)]
pub(crate) struct TokenInfoView {
    /// Public id (the part after `sb_` and before the next `_`).
    pub(crate) id: String,
    /// Actor name.
    pub(crate) name: String,
    /// Role.
    pub(crate) role: Role,
    /// Created, RFC 3339 UTC.
    pub(crate) created_at: String,
    /// When it stops working, if ever.
    pub(crate) expires_at: Option<String>,
    /// When it was revoked, if it was.
    pub(crate) revoked_at: Option<String>,
    /// Who created it (`cli` for the command line); absent when unknown. A token cannot approve a
    /// share requested by whoever created it, directly or through tokens they created.
    pub(crate) created_by: Option<String>,
}

impl From<rows::TokenInfo> for TokenInfoView {
    fn from(t: rows::TokenInfo) -> Self {
        TokenInfoView {
            id: t.id,
            name: t.name,
            role: t.role,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            created_by: t.created_by,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::ShareAction;

    /// The JSON clients have always seen: the id hyphenated, times RFC 3339 UTC in whole seconds,
    /// actions as IAM names in one order, ARNs as text.
    #[test]
    fn a_share_shows_as_it_always_did() {
        let t = time::macros::datetime!(2026-12-01 12:00:00.75 +01:00);
        let share = rows::Share {
            id: ShareId::parse("0190B8A47B7E7CC09D2F6A1E2B3C4D5E").unwrap(),
            status: ShareStatus::Active,
            status_reason: None,
            secret_arn: SecretArn::parse(
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf",
            )
            .unwrap(),
            principal_id: "p1".into(),
            principal_arn: PrincipalArn::parse("444455556666").unwrap(),
            actions: ActionSet::new([ShareAction::DescribeSecret, ShareAction::GetSecretValue]),
            version_stage: None,
            justification: "j".into(),
            expires_at: t,
            requested_by: "r".into(),
            approvals_required: 1,
            approvals: vec![rows::Approval {
                approver: "a".into(),
                decision: crate::domain::Decision::Approve,
                comment: None,
                at: t,
                credential: None,
                issued_by: None,
            }],
            key_arn: None,
            last_error: None,
            break_glass: false,
            created_at: t,
            updated_at: t,
        };
        let v = serde_json::to_value(ShareView::from(share)).unwrap();
        assert_eq!(v["id"], "0190b8a4-7b7e-7cc0-9d2f-6a1e2b3c4d5e");
        assert_eq!(v["expires_at"], "2026-12-01T11:00:00Z");
        assert_eq!(v["created_at"], "2026-12-01T11:00:00Z");
        assert_eq!(v["approvals"][0]["at"], "2026-12-01T11:00:00Z");
        assert_eq!(
            v["actions"],
            serde_json::json!([
                "secretsmanager:GetSecretValue",
                "secretsmanager:DescribeSecret"
            ])
        );
        assert_eq!(v["principal_arn"], "arn:aws:iam::444455556666:root");
        assert_eq!(v["status"], "active");
        assert!(v["version_stage"].is_null());
    }

    /// The hand-written JSON of a share is byte for byte what serde writes for it: with and without
    /// every optional field, with votes, and with strings holding every character JSON escapes.
    #[test]
    fn hand_written_json_is_what_serde_writes() {
        let t = time::macros::datetime!(2026-12-01 12:00:00.75 +01:00);
        let hostile: String = (0u8..0x80).map(char::from).collect::<String>() + "caf\u{e9}\u{202e}";
        let vote = |comment: Option<String>, credential: Option<&str>| rows::Approval {
            approver: "alice".into(),
            decision: crate::domain::Decision::Reject,
            comment,
            at: t,
            credential: credential.map(str::to_owned),
            issued_by: credential.map(|_| "cli".to_owned()),
        };
        let plain = rows::Share {
            id: ShareId::parse("0190B8A47B7E7CC09D2F6A1E2B3C4D5E").unwrap(),
            status: ShareStatus::Pending,
            status_reason: None,
            secret_arn: SecretArn::parse(
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf",
            )
            .unwrap(),
            principal_id: "p1".into(),
            principal_arn: PrincipalArn::parse("arn:aws:iam::444455556666:user/a/\"b\\/c").unwrap(),
            actions: ActionSet::new([ShareAction::GetSecretValue]),
            version_stage: Some("AWSCURRENT".into()),
            justification: "j".into(),
            expires_at: t,
            requested_by: "r".into(),
            approvals_required: 2,
            approvals: vec![],
            key_arn: None,
            last_error: None,
            break_glass: false,
            created_at: t,
            updated_at: t,
        };
        let full = rows::Share {
            status: ShareStatus::Failed,
            status_reason: Some(hostile.clone()),
            actions: ActionSet::new([ShareAction::DescribeSecret, ShareAction::GetSecretValue]),
            version_stage: None,
            justification: hostile.clone(),
            requested_by: "bob@example.com".into(),
            approvals_required: u32::MAX,
            approvals: vec![
                vote(None, None),
                vote(Some(hostile.clone()), Some("0123456789abcdef")),
            ],
            key_arn: Some(
                KmsKeyArn::parse(
                    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                )
                .unwrap(),
            ),
            last_error: Some(hostile),
            break_glass: true,
            updated_at: time::macros::datetime!(2027-01-31 00:00:00 UTC),
            ..plain.clone()
        };
        for share in [plain, full] {
            let mut out = crate::api::json::JsonBuf::with_capacity(0);
            write_share(&mut out, &share);
            let ours = String::from_utf8(out.into_bytes()).unwrap();
            assert_eq!(
                ours,
                serde_json::to_string(&ShareView::from(share)).unwrap()
            );
        }
    }
}
