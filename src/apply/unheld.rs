//! Members of this installation's statements that no share holds: a principal or a secret pattern
//! someone with `PutResourcePolicy`/`PutKeyPolicy` rights added to a list statement (it keeps the
//! statement's shape, so it is no edit and no share's drift), or a statement written under a Sid of
//! this installation. Such a grant carries the broker's name without an approval: drift reports it
//! on every share that reads the policy, an admin's repair removes it, the automatic repair refuses.
//!
//! A member is held when a share that may still stand in the policy holds its entry: a share of the
//! member's consumer in any status of [`MAY_STAND`] (on any replica: the store is shared), of any
//! secret for a key policy (a key's statements span secrets; a share's key entries are counted in the
//! key's region too, since a replicated secret's statements on its replica's key are held by the
//! primary's shares), of the policy's secret for a resource policy. A share that ended after the
//! policy was read (less [`ENDED_MARGIN`]) still holds what it wrote: its revoke or compensation may
//! have removed the member after the read; so does every share of a job still running (a failed
//! share whose compensation failed too stands until recovery compensates it).

use std::collections::HashSet;

use serde_json::Value;

use time::OffsetDateTime;

use super::grant::MAY_STAND;
use super::rmw::Policy;
use super::run::Mode;
use super::{Applier, Failure, grant_of, share_sids, sid_of};
use crate::domain::ShareStatus;
use crate::policy::compose::{
    grant_in, key_statement_for, one_principal_statements_for, resource_statements_for,
};
use crate::policy::document::PolicyDocument;
use crate::policy::merge::{self, Member, MemberKind};
use crate::store::jobs;
use crate::store::rows::{self, Share};

/// The statuses a share ends in once its statements were (or never were) written.
const ENDED: [ShareStatus; 3] = [
    ShareStatus::Revoked,
    ShareStatus::Expired,
    ShareStatus::Failed,
];

/// How long before a policy was read a share that ended since still counts as holding what it wrote
/// (replicas' clocks differ by less).
pub(crate) const ENDED_MARGIN: time::Duration = time::Duration::minutes(5);

/// The entries shares hold in one policy; the whole statements they stand for (an organization's,
/// one an earlier version wrote per principal); and the Sids their own drift checks there.
#[derive(Default)]
struct Held {
    entries: HashSet<String>,
    whole: Vec<Value>,
    checked: HashSet<String>,
}

impl Held {
    /// Adds what `shares` hold in `p`, whose document is `doc`; on a key of another region than a
    /// share's secret, what the share's replica there holds when `has_replica` says the secret has one
    /// in the key's region.
    fn add(
        &mut self,
        p: Policy<'_>,
        doc: &PolicyDocument,
        shares: &[Share],
        installation: &crate::policy::compose::InstallationId,
        has_replica: &dyn Fn(&Share) -> bool,
    ) {
        for s in shares {
            let Ok(g) = grant_of(s) else { continue };
            // The share's replica in the key's region, when its secret has one there.
            let replica = match p {
                Policy::Key(k) | Policy::ReplicaKey(k)
                    if g.secret.region() != k.region() && has_replica(s) =>
                {
                    g.secret.in_region(k.region()).ok()
                }
                _ => None,
            };
            // (statements this version writes, statements an earlier version wrote per principal,
            // whether the share's own drift reads them in `p`) for each grant of the share that `p`
            // may hold. A share's drift reads its key (or any key while none is recorded: a share
            // being applied) and its replicas' keys: a statement under its Sid there that no longer
            // has its form is reported there, as its edit. A share of a secret under another key
            // never reads this key's policy: a statement under its Sid here is no edit anyone
            // reports, and holds nothing.
            let forms: Vec<(Vec<Value>, Vec<Value>, bool)> = match p {
                Policy::Resource(secret) if s.secret_arn.as_str() == secret.as_str() => vec![(
                    resource_statements_for(&g, installation),
                    one_principal_statements_for(&g, installation).0,
                    true,
                )],
                Policy::Resource(_) => Vec::new(),
                Policy::Key(k) | Policy::ReplicaKey(k) => {
                    let mut out = vec![(
                        vec![key_statement_for(&g, installation)],
                        vec![one_principal_statements_for(&g, installation).1],
                        s.key_arn.as_ref().is_none_or(|a| a.as_str() == k.as_str()),
                    )];
                    if let Some(replica) = &replica {
                        out.push((
                            vec![key_statement_for(&grant_in(&g, replica), installation)],
                            Vec::new(),
                            true,
                        ));
                    }
                    out
                }
            };
            let entries = match p {
                Policy::Resource(secret) if s.secret_arn.as_str() == secret.as_str() => {
                    share_sids(&g, installation).resource
                }
                Policy::Resource(_) => Vec::new(),
                Policy::Key(_) | Policy::ReplicaKey(_) => {
                    let mut e = share_sids(&g, installation).key;
                    if let Some(replica) = &replica {
                        e.extend(share_sids(&grant_in(&g, replica), installation).key);
                    }
                    e
                }
            };
            self.entries.extend(entries);
            for (wants, one, reads) in forms {
                self.whole.extend(
                    wants
                        .iter()
                        .chain(&one)
                        .filter(|v| !merge::is_list_statement(v))
                        .cloned(),
                );
                if !reads {
                    continue;
                }
                // The Sids the share's drift checks here, chosen as it chooses
                // (`inspect::drift`): this version's statements when all are there, else the earlier
                // version's when all of those are, else this version's (and, for a key statement,
                // the secret-list statement its grant may be in).
                let present = |v: &Value| merge::find_entry(doc, &merge::entry_of(v)).is_some();
                let chosen = if wants.iter().all(present) {
                    wants
                } else if !one.is_empty() && one.iter().all(present) {
                    one
                } else {
                    for w in &wants {
                        if let Some(alias) = merge::secret_list_entry(w) {
                            self.checked.insert(merge::split_entry(&alias).0.to_owned());
                        }
                    }
                    wants
                };
                self.checked.extend(chosen.iter().map(sid_of));
            }
        }
    }

    /// Whether a share holds `m`: a list statement's principal or a secret list's pattern by its
    /// entry; a statement of no list form when it is one a share stands for, content and all (an
    /// organization's, one an earlier version wrote), or when a share's drift checks its Sid (a
    /// share's statement someone edited: reported there, as that share's edit). A Sid a share would
    /// have but its drift does not look at (an earlier version's statement beside this version's, a
    /// secret list the grant is not in, a share on another key) holds nothing else.
    fn holds(&self, doc: &PolicyDocument, m: &Member) -> bool {
        match m.kind() {
            MemberKind::Principal(_) | MemberKind::Pattern(_) => self.entries.contains(m.entry()),
            MemberKind::Statement => {
                self.checked.contains(m.sid())
                    || merge::find(doc, m.sid()).is_some_and(|found| {
                        self.whole
                            .iter()
                            .any(|v| sid_of(v) == m.sid() && merge::same_content(found, v))
                    })
            }
            MemberKind::Repeated => false,
        }
    }
}

/// The consumers whose shares can hold one of `members`.
fn consumers(members: &[Member]) -> Vec<String> {
    members
        .iter()
        .flat_map(|m| m.who().iter().cloned())
        .collect()
}

impl<'a> Policy<'a> {
    /// The ARN of what the policy belongs to: the secret's, or the key's.
    pub(crate) fn arn(&self) -> &'a str {
        match self {
            Policy::Resource(s) => s.as_str(),
            Policy::Key(k) | Policy::ReplicaKey(k) => k.as_str(),
        }
    }

    /// The policy with what it belongs to, for a message: `resource policy of <secret ARN>`, `key
    /// policy of <key ARN>`.
    pub(crate) fn named(&self) -> String {
        match self {
            Policy::Resource(s) => format!("resource policy of {s}"),
            Policy::Key(k) => format!("key policy of {k}"),
            Policy::ReplicaKey(k) => format!("key policy of {k} (the replica in {})", k.region()),
        }
    }
}

/// What `m` in `p` is, in words, naming the statement, the policy and the unheld principal or pattern.
pub(crate) fn unheld_message(p: Policy<'_>, m: &Member) -> String {
    let what = match m.kind() {
        MemberKind::Principal(who) => format!(
            "the {} statement {} lists {who}, which no share holds",
            p.named(),
            m.sid()
        ),
        MemberKind::Pattern(pattern) => format!(
            "the {} statement {} names the secret {pattern} for {}, which no share holds",
            p.named(),
            m.sid(),
            m.principals()
        ),
        MemberKind::Statement => format!(
            "the {} has a statement {} (principal {}) under a Sid of this installation that no share holds",
            p.named(),
            m.sid(),
            m.principals()
        ),
        MemberKind::Repeated => format!(
            "the {} has a second statement {} (principal {}) under the Sid of an earlier one, which no \
             share holds",
            p.named(),
            m.sid(),
            m.principals()
        ),
    };
    format!(
        "{what}: someone other than the broker wrote it, a grant under the broker's name that no one \
         approved; the broker does not remove it on its own: an admin's repair removes it"
    )
}

impl Applier {
    /// The members of this installation's statements in `doc`, the policy `p` as read at `read_at` or
    /// later, that no share holds (see the module's documentation).
    pub(crate) async fn unheld(
        &self,
        p: Policy<'_>,
        doc: &PolicyDocument,
        read_at: OffsetDateTime,
    ) -> Result<Vec<Member>, Failure> {
        let installation = &self.settings.installation;
        let members = merge::broker_members(doc, installation);
        if members.is_empty() {
            return Ok(members);
        }
        let mut held = Held::default();
        let live = self
            .shares_of_principals(consumers(&members), &MAY_STAND)
            .await?;
        held.add(p, doc, &live, installation, &|_| false);
        let mut left: Vec<Member> = members
            .into_iter()
            .filter(|m| !held.holds(doc, m))
            .collect();
        if left.is_empty() {
            return Ok(left);
        }
        let since = read_at - ENDED_MARGIN;
        let ended: Vec<Share> = self
            .shares_of_principals(consumers(&left), &ENDED)
            .await?
            .into_iter()
            .filter(|s| s.updated_at >= since)
            .collect();
        held.add(p, doc, &ended, installation, &|_| false);
        // A failed share whose compensation failed too: its job stays running until recovery
        // compensates it, and its statements stand until then.
        let in_jobs = self
            .store
            .read(|c| {
                let mut out = Vec::new();
                for job in jobs::running(c)? {
                    for id in job.share_ids {
                        out.extend(rows::share_by_id(c, id)?);
                    }
                }
                Ok(out)
            })
            .await?;
        held.add(p, doc, &in_jobs, installation, &|_| false);
        left.retain(|m| !held.holds(doc, m));
        // On a key, what shares of secrets of other regions hold as their replicas' statements,
        // for the secrets that have a replica in the key's region (asked only now, for what is
        // left; a secret that cannot be described counts as having one: never call a replica's
        // grant foreign).
        if let (Policy::Key(k) | Policy::ReplicaKey(k), false) = (p, left.is_empty()) {
            let others: Vec<Share> = live
                .into_iter()
                .chain(ended)
                .chain(in_jobs)
                .filter(|s| s.secret_arn.region() != k.region())
                .collect();
            let mut replicated = HashSet::new();
            let mut asked = HashSet::new();
            for s in &others {
                if !asked.insert(s.secret_arn.as_str().to_owned()) {
                    continue;
                }
                let there = match self.resolve_replicas(&s.secret_arn).await {
                    Ok(replicas) => replicas.iter().any(|r| r.secret.region() == k.region()),
                    Err(_) => true,
                };
                if there {
                    replicated.insert(s.secret_arn.as_str().to_owned());
                }
            }
            held.add(p, doc, &others, installation, &|s| {
                replicated.contains(s.secret_arn.as_str())
            });
        }
        left.retain(|m| !held.holds(doc, m));
        Ok(left)
    }

    /// For a repair about to write `p` (under its lock): the entries of the members no share holds,
    /// to remove with the write when an admin asked for the repair. The automatic repair removes
    /// nothing: it writes the shares' grants all the same (a consumer's access is restored whatever
    /// else the policy holds), and adds what it left, in words, to `left` (the share then stays
    /// drifted, naming them). Nothing for an apply.
    pub(super) async fn unheld_to_remove(
        &self,
        p: Policy<'_>,
        mode: Mode,
        left: &mut Vec<String>,
    ) -> Result<Vec<String>, Failure> {
        let Mode::Repair { by_admin } = mode else {
            return Ok(Vec::new());
        };
        let read_at = self.clock.now();
        let Some(text) = self.read(p).await?.filter(|t| !t.trim().is_empty()) else {
            return Ok(Vec::new());
        };
        // A policy that does not parse is the read-modify-write's to refuse.
        let Ok(doc) = PolicyDocument::parse(&text) else {
            return Ok(Vec::new());
        };
        let unheld = self.unheld(p, &doc, read_at).await?;
        if by_admin {
            return Ok(unheld.iter().map(|m| m.entry().to_owned()).collect());
        }
        left.extend(unheld.iter().map(|m| unheld_message(p, m)));
        Ok(Vec::new())
    }
}
