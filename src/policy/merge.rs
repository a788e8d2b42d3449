//! Upserts and removes broker statements in an existing policy without touching anyone else's:
//! foreign statements keep their exact text and order, whatever happens to ours.
//!
//! Ownership is exact ([`Owner`]): a statement is this broker's when its Sid is one this installation
//! writes (`SecretBroker<installation id><S|K><16 hex>`), or an earlier-scheme Sid
//! (`SecretBroker<S|K><16 hex>`) that one of this broker's shares relied on and was given to the
//! [`Owner`] explicitly. Every other statement, another installation's included, is foreign.
//!
//! A *list statement* ([`is_list_statement`]) stands for every share that differs from another only in
//! its IAM principal: its Sid is derived from the statement without its principal, and its
//! `Principal.AWS` lists the principals. What one share holds in a policy is an *entry*
//! ([`entry_of`]): a list statement's Sid with one principal (`"<Sid> <principal>"`), or the Sid of a
//! statement that stands for one grant as a whole. An upsert of a list statement adds its principal to
//! the list; removing an entry takes its principal out of the list, and the statement out when no
//! principal is left. Nothing else of the statement, and nothing of any other statement, changes.
//!
//! In a key policy, one principal's statements that differ only in the secret they name are a
//! *secret-list statement* ([`is_secret_list_statement`]): one principal, its Sid derived from the
//! statement without its secret patterns, the patterns listed. Entries stay what they are (the
//! principal-list Sid of the one-secret statement and the principal): a secret-list statement holds,
//! for each pattern, the entry of the one-secret statement it stands for ([`entries_held`]), so
//! [`find_entry`] and [`remove`] find an entry in either kind, and removing it takes the pattern out.
//! No statement lists several principals and several secrets: that would grant each principal each
//! secret.

use std::collections::BTreeSet;

use serde_json::Value;

use super::compose::{
    InstallationId, condition_values, expanded_sids, is_installation_sid, is_legacy_sid,
    is_unique_id, secret_list_sid, secret_patterns, secret_shape, shape, with_secret_patterns,
};
pub use super::compose::{is_list_statement, is_secret_list_statement};
use super::document::{ParseError, PolicyDocument, RawStatement};

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The statement was appended.
    Added,
    /// A broker statement with the same Sid but other content was replaced in place.
    Replaced,
    /// An equal statement was already there.
    Unchanged,
    /// A list statement of the same shape was there: the principal was added to its list; or (a key
    /// statement) the principal's secret-list statement of the same secret shape was there, or a
    /// statement listing that principal alone for another secret, and the secret's pattern was added
    /// to it (the latter becoming a secret-list statement).
    Listed,
}

/// Which statements a merge may touch: this installation's, plus the earlier-scheme Sids listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    installation: InstallationId,
    legacy: BTreeSet<String>,
}

impl Owner {
    /// The owner of `installation`'s statements.
    pub fn new(installation: InstallationId) -> Self {
        Self {
            installation,
            legacy: BTreeSet::new(),
        }
    }

    /// Also owns these earlier-scheme Sids (those that are not of that form are ignored).
    pub fn with_legacy<I, S>(mut self, sids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.legacy.extend(
            sids.into_iter()
                .map(Into::into)
                .filter(|s| is_legacy_sid(s)),
        );
        self
    }

    /// The installation.
    pub fn installation(&self) -> &InstallationId {
        &self.installation
    }

    /// Whether the statement with this Sid is the broker's to remove or check.
    pub fn owns(&self, sid: &str) -> bool {
        is_installation_sid(sid, &self.installation) || self.legacy.contains(sid)
    }

    /// Whether the broker writes statements with this Sid (earlier-scheme Sids are never written).
    pub fn writes(&self, sid: &str) -> bool {
        is_installation_sid(sid, &self.installation)
    }
}

/// Sids of the statements of a document that `owner` owns, in order.
pub fn broker_sids(doc: &PolicyDocument, owner: &Owner) -> Vec<String> {
    doc.statements()
        .iter()
        .filter_map(|s| s.parsed().sid.clone())
        .filter(|s| owner.owns(s))
        .collect()
}

/// The statement with this Sid, if present.
pub fn find<'a>(doc: &'a PolicyDocument, sid: &str) -> Option<&'a RawStatement> {
    doc.statements()
        .iter()
        .find(|s| s.parsed().sid.as_deref() == Some(sid))
}

/// Whether a statement's text equals `statement` (both through the parser: serde_json does not read
/// every float back to the exact value it wrote, so comparing parsed text with a `Value` built in
/// memory could call an equal statement changed).
pub fn same_content(found: &RawStatement, statement: &Value) -> bool {
    let parse = |t: &str| serde_json::from_str::<Value>(t).ok();
    match (parse(found.raw()), serde_json::to_string(statement)) {
        (Some(old), Ok(text)) => Some(old) == parse(&text),
        _ => false,
    }
}

/// The entry of a statement the broker composed: `"<Sid> <principal>"` for a list statement (its one
/// principal), the Sid for any other. Sids are alphanumeric and principals hold no space, so an entry
/// splits back unambiguously ([`split_entry`]).
pub fn entry_of(statement: &Value) -> String {
    let sid = statement
        .get("Sid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (is_list_statement(statement), one_principal(statement)) {
        (true, Some(p)) => format!("{sid} {p}"),
        _ => sid.to_owned(),
    }
}

/// Whether `entry` is a [`secret_list_entry`] (`"<secret-list Sid> <secret pattern>"`): its second
/// word is a secret pattern (`...-??????`), which no principal ARN is (IAM names hold no `?`).
pub fn is_secret_list_name(entry: &str) -> bool {
    split_entry(entry).1.is_some_and(|m| m.contains('?'))
}

/// An entry's Sid and, for a list statement's entry, its principal.
pub fn split_entry(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once(' ') {
        Some((sid, member)) => (sid, Some(member)),
        None => (entry, None),
    }
}

/// The single `Principal.AWS` value of a composed statement.
fn one_principal(statement: &Value) -> Option<&str> {
    statement.get("Principal")?.get("AWS")?.as_str()
}

/// The `Principal.AWS` values of a statement as found in a policy.
pub fn members(found: &RawStatement) -> Vec<String> {
    found
        .parsed()
        .principal
        .as_ref()
        .map(|p| p.values("AWS").to_vec())
        .unwrap_or_default()
}

fn parsed_value(found: &RawStatement) -> Option<Value> {
    serde_json::from_str(found.raw()).ok()
}

/// Whether a statement found in a policy has the content of the composed `statement` apart from the
/// principals it lists (for a list statement), or all of it (for any other).
pub fn same_shape(found: &RawStatement, statement: &Value) -> bool {
    if !is_list_statement(statement) {
        return same_content(found, statement);
    }
    let reparsed = serde_json::to_string(statement)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    match (parsed_value(found), reparsed) {
        (Some(f), Some(s)) => shape(&f).is_some() && shape(&f) == shape(&s),
        _ => false,
    }
}

/// Whether the statement found grants what the composed `statement` stands for: the same shape listing
/// its principal (a list statement), or the same content.
pub fn covers(found: &RawStatement, statement: &Value) -> bool {
    if !is_list_statement(statement) {
        return same_content(found, statement);
    }
    same_shape(found, statement)
        && one_principal(statement).is_some_and(|p| members(found).iter().any(|m| m == p))
}

/// The statement holding `entry`: the statement with its Sid, and for a list statement's entry only
/// when it lists the entry's principal; or the secret-list statement of the entry's principal that
/// names the secret of the entry's statement ([`compose::expanded_sids`](super::compose::expanded_sids)).
/// An entry `"<secret-list Sid> <secret pattern>"` ([`secret_list_entry`]) is held by the statement
/// with that Sid naming one principal and that pattern, even one whose principal AWS replaced by a
/// unique id (a deleted principal).
pub fn find_entry<'a>(doc: &'a PolicyDocument, entry: &str) -> Option<&'a RawStatement> {
    let (sid, member) = split_entry(entry);
    if let Some(found) = find(doc, sid) {
        match member {
            None => return Some(found),
            Some(m) if members(found).iter().any(|x| x == m) => return Some(found),
            Some(m) if names_pattern(found, m) => return Some(found),
            Some(_) => {}
        }
    }
    let m = member?;
    secret_list_holding(doc, sid, m).map(|(i, _)| &doc.statements()[i])
}

/// Whether `found` is a statement that is no principal list naming the secret pattern `m`: a
/// secret-list statement, one whose principal AWS replaced, or one an owner edited (another principal
/// added included: the Sid is still the one derived from the share's principal, and a revoke must
/// still take the share's pattern out of it).
fn names_pattern(found: &RawStatement, m: &str) -> bool {
    !members(found).is_empty()
        && parsed_value(found)
            .is_some_and(|v| !is_list_statement(&v) && secret_patterns(&v).iter().any(|p| p == m))
}

/// The secret-list statement that holds the entry `"<sid> <principal>"` (a principal-list Sid of a key
/// statement): its position and the pattern standing for the entry's secret.
fn secret_list_holding(
    doc: &PolicyDocument,
    sid: &str,
    principal: &str,
) -> Option<(usize, String)> {
    doc.statements().iter().enumerate().find_map(|(i, st)| {
        let listed = members(st);
        if listed.len() != 1 || listed[0] != principal {
            return None;
        }
        let v = parsed_value(st)?;
        expanded_sids(&v)?
            .into_iter()
            .find(|(s, _)| s == sid)
            .map(|(_, p)| (i, p))
    })
}

/// The entries a statement found in a policy holds: `"<Sid> <member>"` for each principal of a list
/// statement; for a secret-list statement, for each pattern, the entry of the one-secret statement of
/// its principal ([`entry_of`] of what [`compose::key_statement_for`](super::compose::key_statement_for)
/// composes for that grant); its Sid for any other statement.
pub fn entries_held(found: &RawStatement) -> Vec<String> {
    let sid = found.parsed().sid.clone().unwrap_or_default();
    let Some(v) = parsed_value(found) else {
        return vec![sid];
    };
    if is_list_statement(&v) {
        return members(found)
            .iter()
            .map(|m| format!("{sid} {m}"))
            .collect();
    }
    if let Some(expanded) = expanded_sids(&v) {
        let p = members(found).remove(0);
        return expanded
            .into_iter()
            .map(|(s, _)| format!("{s} {p}"))
            .collect();
    }
    vec![sid]
}

/// The second name of a composed key statement's entry: `"<secret-list Sid> <secret pattern>"`, the
/// Sid the statement of its principal and secret shape has when it lists secrets, and its pattern.
/// It names the same grant as [`entry_of`] (a share holds both), and finds it ([`find_entry`]) when
/// AWS replaced the principal of that statement by its unique id: the principal was deleted, the Sid
/// no longer matches the content, and `entry_of`'s entry can no longer be found in it. `None` for a
/// statement that is not a principal-list key statement of one named principal.
pub fn secret_list_entry(statement: &Value) -> Option<String> {
    if !is_list_statement(statement) {
        return None;
    }
    let y = secret_list_sid(statement)?;
    match secret_patterns(statement).as_slice() {
        [p] => Some(format!("{y} {p}")),
        _ => None,
    }
}

/// Whether `doc` holds what the composed `statement` grants, unedited: its statement (a list statement
/// listing its principal with the right shape, or its content), or a secret-list statement of its
/// principal naming its secret.
pub fn holds(doc: &PolicyDocument, statement: &Value) -> bool {
    let sid = statement
        .get("Sid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if find(doc, sid).is_some_and(|f| covers(f, statement)) {
        return true;
    }
    is_list_statement(statement)
        && one_principal(statement).is_some_and(|p| secret_list_holding(doc, sid, p).is_some())
}

/// The Sid of a broker statement in `doc` that someone other than the broker changed and that an
/// upsert of `statement` would write over: the statement with its Sid when its shape differs, or (a
/// key statement) the secret-list statement of its principal and secret shape when that is no longer
/// one (its principal not replaced by a unique id: a deleted principal's statement is never merged
/// into). `None` when `doc` holds the grant already.
pub fn edited(doc: &PolicyDocument, statement: &Value) -> Option<String> {
    if holds(doc, statement) {
        return None;
    }
    let sid = statement.get("Sid").and_then(Value::as_str)?;
    if let Some(found) = find(doc, sid)
        && !same_shape(found, statement)
    {
        return Some(sid.to_owned());
    }
    if !is_list_statement(statement) {
        return None;
    }
    let y = secret_list_sid(statement)?;
    let found = find(doc, &y)?;
    let list = parsed_value(found).is_some_and(|v| is_secret_list_statement(&v));
    (!list && !members(found).iter().any(|m| is_unique_id(m))).then_some(y)
}

/// `statement` with `Principal.AWS` set to `list` (a string for one, an array for more).
fn with_members(statement: &Value, list: &[String]) -> Result<RawStatement, ParseError> {
    let mut v = statement.clone();
    let aws = match list {
        [one] => Value::String(one.clone()),
        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
    };
    v["Principal"] = serde_json::json!({ "AWS": aws });
    RawStatement::from_value(&v)
}

/// Adds `statement` (which must carry a Sid `owner` writes), or replaces the statement with the same
/// Sid. A list statement whose Sid is there already with the same shape gets the statement's principal
/// added to its list (`Listed`; `Unchanged` when it lists it); with another shape (someone edited it) it
/// is replaced by the composed shape listing the principals it listed and this one (`Replaced`).
///
/// A key statement of one principal ([`compose::secret_shape`](super::compose::secret_shape)) whose
/// principal-list statement is not there joins, in this order: the principal's secret-list statement of
/// the same secret shape (its pattern added: `Listed`; `Unchanged` when one names it already); or a
/// statement of this installation listing that principal alone for another secret, with the same
/// secret shape, which becomes the secret-list statement of both patterns (`Listed`: the other grant's
/// entry is held by it as before, [`entries_held`]); or it is added. A statement never lists several
/// principals and several secrets. A secret-list Sid found with other content (someone edited it) is
/// replaced by the composed shape naming the patterns it named and this one (`Replaced`); one whose
/// principal AWS replaced by a unique id (the principal was deleted) is never merged into.
///
/// Whether replacing an edited statement is allowed is the caller's decision: it sees `Replaced`
/// coming with [`edited`] before it writes.
pub fn upsert(
    doc: &mut PolicyDocument,
    owner: &Owner,
    statement: &Value,
) -> Result<Change, ParseError> {
    let sid = statement
        .get("Sid")
        .and_then(Value::as_str)
        .filter(|s| owner.writes(s))
        .ok_or_else(|| {
            ParseError(format!(
                "a broker statement needs a Sid of installation {} (SecretBroker{}<S|K><16 hex>)",
                owner.installation, owner.installation
            ))
        })?
        .to_owned();
    if is_list_statement(statement)
        && let Some(p) = one_principal(statement)
    {
        if secret_list_holding(doc, &sid, p).is_some() {
            return Ok(Change::Unchanged);
        }
        if let Some(i) = position(doc, &sid) {
            let found = &doc.statements()[i];
            let mut list = members(found);
            let same = same_shape(found, statement);
            let listed = list.iter().any(|m| m == p);
            if same && listed {
                return Ok(Change::Unchanged);
            }
            if !listed {
                list.push(p.to_owned());
            }
            doc.statements_mut()[i] = with_members(statement, &list)?;
            return Ok(if same {
                Change::Listed
            } else {
                Change::Replaced
            });
        }
        if let Some(change) = join_secret_list(doc, owner, statement, p)? {
            return Ok(change);
        }
    }
    let new = RawStatement::from_value(statement)?;
    match position(doc, &sid) {
        Some(i) => {
            let stmts = doc.statements_mut();
            let parse = |t: &str| serde_json::from_str::<Value>(t).ok();
            let same = parse(stmts[i].raw()).is_some_and(|old| Some(old) == parse(new.raw()));
            if same {
                Ok(Change::Unchanged)
            } else {
                stmts[i] = new;
                Ok(Change::Replaced)
            }
        }
        None => {
            doc.statements_mut().push(new);
            Ok(Change::Added)
        }
    }
}

fn position(doc: &PolicyDocument, sid: &str) -> Option<usize> {
    doc.statements()
        .iter()
        .position(|s| s.parsed().sid.as_deref() == Some(sid))
}

/// [`upsert`] of a principal-list key statement of principal `p` whose Sid is not in `doc`: into the
/// principal's secret-list statement, or turning a one-principal statement of another secret into one;
/// `None` when neither is there (the statement is added as it is).
fn join_secret_list(
    doc: &mut PolicyDocument,
    owner: &Owner,
    statement: &Value,
    p: &str,
) -> Result<Option<Change>, ParseError> {
    let (Some(y), Some(ours)) = (secret_list_sid(statement), secret_shape(statement)) else {
        return Ok(None);
    };
    let Ok([pattern]) = <[String; 1]>::try_from(secret_patterns(statement)) else {
        return Ok(None);
    };
    if !owner.writes(&y) {
        return Ok(None);
    }
    if let Some(i) = position(doc, &y) {
        let found = &doc.statements()[i];
        if members(found).iter().any(|m| is_unique_id(m)) {
            // A deleted principal's statement (AWS shows its unique id): never granted again.
            return Ok(None);
        }
        let v = parsed_value(found);
        let mut patterns = v.as_ref().map(secret_patterns).unwrap_or_default();
        let list = v.as_ref().is_some_and(is_secret_list_statement);
        if list && patterns.contains(&pattern) {
            return Ok(Some(Change::Unchanged));
        }
        if !patterns.contains(&pattern) {
            patterns.push(pattern);
        }
        doc.statements_mut()[i] =
            RawStatement::from_value(&with_secret_patterns(statement, &patterns, &y))?;
        return Ok(Some(if list {
            Change::Listed
        } else {
            Change::Replaced
        }));
    }
    let other = doc.statements().iter().position(|st| {
        let listed = members(st);
        listed.len() == 1
            && listed[0] == p
            && st.parsed().sid.as_deref().is_some_and(|s| owner.writes(s))
            && parsed_value(st).is_some_and(|v| {
                is_list_statement(&v)
                    && secret_shape(&v).as_ref() == Some(&ours)
                    && secret_patterns(&v).len() == 1
            })
    });
    let Some(i) = other else {
        return Ok(None);
    };
    let mut patterns = parsed_value(&doc.statements()[i])
        .map(|v| secret_patterns(&v))
        .unwrap_or_default();
    if patterns.contains(&pattern) {
        // Its own Sid would be ours: not another secret.
        return Ok(None);
    }
    patterns.push(pattern);
    doc.statements_mut()[i] =
        RawStatement::from_value(&with_secret_patterns(statement, &patterns, &y))?;
    Ok(Some(Change::Listed))
}

/// Removes an entry ([`entry_of`]): for a list statement's entry its principal from the statement's
/// list, and the statement when no principal is left; for an entry a secret-list statement holds (or a
/// [`secret_list_entry`]) the secret's pattern from that statement, and the statement when no pattern
/// is left; for a Sid the statement(s) with it. Returns whether anything was removed. Refuses to touch
/// a statement whose Sid `owner` does not own.
pub fn remove(doc: &mut PolicyDocument, owner: &Owner, entry: &str) -> bool {
    let (sid, member) = split_entry(entry);
    if !owner.owns(sid) {
        return false;
    }
    if let Some(m) = member {
        if m.starts_with('{') {
            return remove_repeated(doc, sid, m);
        }
        // Every statement with the Sid, the first one first: an owner may have written a second
        // statement under it listing the member ([`broker_members`]).
        let with_sid: Vec<usize> = doc
            .statements()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.parsed().sid.as_deref() == Some(sid))
            .map(|(i, _)| i)
            .collect();
        for i in with_sid {
            let found = &doc.statements()[i];
            let list = members(found);
            if list.iter().any(|x| x == m) {
                let rest: Vec<String> = list.into_iter().filter(|x| x != m).collect();
                if rest.is_empty() {
                    doc.statements_mut().remove(i);
                    return true;
                }
                let rebuilt = parsed_value(found).and_then(|v| with_members(&v, &rest).ok());
                match rebuilt {
                    Some(r) => doc.statements_mut()[i] = r,
                    // Our own statement that no longer parses as a value: never keep the principal in it.
                    None => {
                        doc.statements_mut().remove(i);
                    }
                }
                return true;
            }
            if names_pattern(found, m) {
                remove_pattern(doc, i, m);
                return true;
            }
        }
        if let Some((i, pattern)) = secret_list_holding(doc, sid, m)
            && doc.statements()[i]
                .parsed()
                .sid
                .as_deref()
                .is_some_and(|s| owner.owns(s))
        {
            remove_pattern(doc, i, &pattern);
            return true;
        }
        return false;
    }
    let stmts = doc.statements_mut();
    let before = stmts.len();
    stmts.retain(|s| s.parsed().sid.as_deref() != Some(sid));
    stmts.len() != before
}

/// Removes the statements with the Sid `sid` other than the first one whose content is `content` (the
/// entry of a [`MemberKind::Repeated`] member): the first statement with a Sid is the one the broker
/// reads and writes, and stays.
fn remove_repeated(doc: &mut PolicyDocument, sid: &str, content: &str) -> bool {
    let Ok(wanted) = serde_json::from_str::<Value>(content) else {
        return false;
    };
    let mut first = true;
    let before = doc.statements().len();
    doc.statements_mut().retain(|s| {
        if s.parsed().sid.as_deref() != Some(sid) {
            return true;
        }
        if std::mem::take(&mut first) {
            return true;
        }
        parsed_value(s).as_ref() != Some(&wanted)
    });
    doc.statements().len() != before
}

/// Takes `pattern` out of the secret patterns of statement `i`, and the statement when none is left.
fn remove_pattern(doc: &mut PolicyDocument, i: usize, pattern: &str) {
    let found = &doc.statements()[i];
    let sid = found.parsed().sid.clone().unwrap_or_default();
    let rebuilt = parsed_value(found).and_then(|v| {
        let rest: Vec<String> = secret_patterns(&v)
            .into_iter()
            .filter(|p| p != pattern)
            .collect();
        if rest.is_empty() {
            return None;
        }
        RawStatement::from_value(&with_secret_patterns(&v, &rest, &sid)).ok()
    });
    match rebuilt {
        Some(r) => doc.statements_mut()[i] = r,
        // The last pattern, or our own statement that no longer parses: the statement goes.
        None => {
            doc.statements_mut().remove(i);
        }
    }
}

/// What one of this installation's statements in a policy grants, one member at a time
/// ([`broker_members`]): a principal of a list statement, a secret pattern of a secret-list statement,
/// or a whole statement of another form. Each is some share's grant, or someone wrote it under the
/// broker's name: whoever holds its [`entry`](Member::entry) accounts for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    sid: String,
    entry: String,
    kind: MemberKind,
    who: Vec<String>,
}

/// Which part of its statement a [`Member`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    /// A principal a list statement lists.
    Principal(String),
    /// A secret pattern a secret-list statement names (for its one principal).
    Pattern(String),
    /// A statement of any other form, as a whole (a one-grant statement, an organization's, or one
    /// an owner wrote under a Sid of this installation).
    Statement,
    /// A statement of no list form under the Sid of an earlier statement of the policy, as a whole:
    /// the broker writes one statement per Sid and reads the first, so no share holds a second one
    /// (its entry is `"<Sid> <its content as JSON>"`, which [`remove`] takes out, leaving the first).
    Repeated,
}

impl Member {
    /// The Sid of its statement.
    pub fn sid(&self) -> &str {
        &self.sid
    }
    /// The entry a share holding it holds ([`entry_of`], or [`entries_held`] of a secret list); what
    /// [`remove`] takes out.
    pub fn entry(&self) -> &str {
        &self.entry
    }
    /// Which part of its statement it is.
    pub fn kind(&self) -> &MemberKind {
        &self.kind
    }
    /// The consumers (principal ARNs, organization ids, OU paths, as shares name them) whose shares
    /// can hold it: the statement's principals (never `"*"` or a unique id), and the organization or
    /// OU its `"*"` is narrowed to.
    pub fn who(&self) -> &[String] {
        &self.who
    }
    /// Its statement's principals, for a message: the listed ARNs, and `"*"` with its narrowing.
    pub fn principals(&self) -> String {
        if self.who.is_empty() {
            "\"*\"".to_owned()
        } else {
            self.who.join(", ")
        }
    }
}

/// The members of the statements of `doc` whose Sid is one `installation` writes, in order: each
/// principal of a list statement, each pattern of a secret-list statement, and each other such
/// statement whole. A unique id AWS put in place of a deleted principal is evidence of a share's
/// deleted principal, never a member, and a statement naming only unique ids grants no one.
pub fn broker_members(doc: &PolicyDocument, installation: &InstallationId) -> Vec<Member> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for st in doc.statements() {
        let Some(sid) = st.parsed().sid.clone() else {
            continue;
        };
        if !is_installation_sid(&sid, installation) {
            continue;
        }
        let repeated = !seen.insert(sid.clone());
        let listed = members(st);
        let v = parsed_value(st).unwrap_or(Value::Null);
        if is_list_statement(&v) {
            for m in listed.into_iter().filter(|m| !is_unique_id(m)) {
                out.push(Member {
                    sid: sid.clone(),
                    entry: format!("{sid} {m}"),
                    kind: MemberKind::Principal(m.clone()),
                    who: vec![m],
                });
            }
        } else if let (Some(expanded), [p]) = (expanded_sids(&v), listed.as_slice()) {
            for (one, pattern) in expanded {
                out.push(Member {
                    sid: sid.clone(),
                    entry: format!("{one} {p}"),
                    kind: MemberKind::Pattern(pattern),
                    who: vec![p.clone()],
                });
            }
        } else {
            if !listed.is_empty() && listed.iter().all(|m| is_unique_id(m)) {
                // A deleted principal's statement (a secret list whose principal AWS replaced no
                // longer has its form): it grants no one, and its shares' drift names it.
                continue;
            }
            let mut who: Vec<String> = listed
                .into_iter()
                .filter(|m| m != "*" && !is_unique_id(m))
                .collect();
            who.extend(org_narrowed_to(&v));
            if repeated {
                out.push(Member {
                    entry: format!("{sid} {v}"),
                    sid,
                    kind: MemberKind::Repeated,
                    who,
                });
                continue;
            }
            out.push(Member {
                entry: sid.clone(),
                sid,
                kind: MemberKind::Statement,
                who,
            });
        }
    }
    out
}

/// The organization ids and OU paths (as a share names them: an OU path without the trailing `*`) a
/// statement's condition narrows `"*"` to, in the forms [`compose::org_narrowing`](super::compose::org_narrowing) writes.
fn org_narrowed_to(statement: &Value) -> Vec<String> {
    let mut out = condition_values(statement, "StringEquals", "aws:PrincipalOrgID");
    out.extend(
        condition_values(statement, "ForAnyValue:StringLike", "aws:PrincipalOrgPaths")
            .into_iter()
            .map(|p| p.strip_suffix('*').map(str::to_owned).unwrap_or(p)),
    );
    out
}

/// The result of merging into a policy that may not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// The document to write.
    Document(String),
    /// No statement is left: delete the policy instead of writing an empty one.
    Empty,
}

/// Parses `existing` (or starts a new document when there is none), upserts `add`, removes the Sids in
/// `remove`, and renders the result.
pub fn merge(
    existing: Option<&str>,
    owner: &Owner,
    add: &[Value],
    remove_sids: &[&str],
) -> Result<Merged, ParseError> {
    let mut doc = match existing {
        Some(text) if !text.trim().is_empty() => PolicyDocument::parse(text)?,
        _ => PolicyDocument::new(),
    };
    for s in add {
        upsert(&mut doc, owner, s)?;
    }
    for sid in remove_sids {
        remove(&mut doc, owner, sid);
    }
    Ok(if doc.is_empty() {
        Merged::Empty
    } else {
        Merged::Document(doc.render())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compose::SID_PREFIX;

    fn sid_of(v: &Value) -> String {
        v["Sid"].as_str().unwrap().to_owned()
    }
    use serde_json::json;

    fn owner() -> Owner {
        Owner::default()
    }

    fn sid(n: u32) -> String {
        format!("{SID_PREFIX}MainS{n:016x}")
    }

    fn ours(n: u32) -> Value {
        json!({"Sid": sid(n), "Effect": "Allow",
               "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
               "Action": "secretsmanager:GetSecretValue", "Resource": "*"})
    }

    const FOREIGN: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"secretsmanager:*","Resource":"*"},
  {"Effect" : "Deny", "Principal":"*", "Action":"secretsmanager:DeleteSecret", "Resource":"*", "Condition":{"Bool":{"aws:SecureTransport":false}}}]}"#;

    #[test]
    fn absent_policy_gets_a_new_document_and_empties_again() {
        let Merged::Document(d) = merge(None, &owner(), &[ours(1)], &[]).unwrap() else {
            panic!()
        };
        assert!(
            d.starts_with(r#"{"Version":"2012-10-17","Statement":[{"Sid":"SecretBrokerMainS"#),
            "{d}"
        );
        assert_eq!(
            merge(Some(&d), &owner(), &[], &[&sid(1)]).unwrap(),
            Merged::Empty
        );
    }

    #[test]
    fn foreign_statements_keep_their_text_and_order() {
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        let before: Vec<String> = doc
            .statements()
            .iter()
            .map(|s| s.raw().to_owned())
            .collect();
        assert_eq!(upsert(&mut doc, &owner(), &ours(1)).unwrap(), Change::Added);
        assert_eq!(
            upsert(&mut doc, &owner(), &ours(1)).unwrap(),
            Change::Unchanged
        );
        assert_eq!(upsert(&mut doc, &owner(), &ours(2)).unwrap(), Change::Added);
        let after: Vec<String> = doc
            .statements()
            .iter()
            .map(|s| s.raw().to_owned())
            .collect();
        assert_eq!(after[..2], before[..]);
        assert_eq!(broker_sids(&doc, &owner()).len(), 2);
        // Through a render and a fresh parse too.
        let again = PolicyDocument::parse(&doc.render()).unwrap();
        assert_eq!(again.statements()[1].raw(), before[1]);
        // Remove ours: back to the original text exactly.
        assert!(remove(&mut doc, &owner(), &sid(1)));
        assert!(remove(&mut doc, &owner(), &sid(2)));
        assert_eq!(doc.render(), FOREIGN);
        // Never removes a foreign statement, even when asked.
        assert!(!remove(&mut doc, &owner(), "Admins"));
        assert_eq!(doc.statements().len(), 2);
    }

    #[test]
    fn replaces_a_changed_broker_statement_in_place() {
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        upsert(&mut doc, &owner(), &ours(1)).unwrap();
        upsert(&mut doc, &owner(), &ours(2)).unwrap();
        let mut changed = ours(1);
        changed["Action"] = json!([
            "secretsmanager:GetSecretValue",
            "secretsmanager:DescribeSecret"
        ]);
        assert_eq!(
            upsert(&mut doc, &owner(), &changed).unwrap(),
            Change::Replaced
        );
        assert_eq!(broker_sids(&doc, &owner()), [sid(1), sid(2)]);
        assert_eq!(
            doc.statements()[2].parsed().action.as_ref().unwrap().len(),
            2
        );
    }

    #[test]
    fn single_object_statement_and_missing_version() {
        let text = r#"{"Statement":{"Sid":"X","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"*","Resource":"*"}}"#;
        let mut doc = PolicyDocument::parse(text).unwrap();
        upsert(&mut doc, &owner(), &ours(7)).unwrap();
        let r = doc.render();
        assert!(r.starts_with(r#"{"Statement":[{"Sid":"X""#), "{r}");
        assert!(
            !r.contains("Version"),
            "the broker does not add a Version to someone else's document"
        );
        remove(&mut doc, &owner(), &sid(7));
        assert_eq!(doc.render(), text);
        // Across a text round trip it stays an array of one: the same policy.
        let mut again = PolicyDocument::parse(&r).unwrap();
        remove(&mut again, &owner(), &sid(7));
        assert_eq!(
            again.render(),
            r#"{"Statement":[{"Sid":"X","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"*","Resource":"*"}]}"#
        );
    }

    fn listed(principal: &str, stage: &str) -> Value {
        use crate::domain::ShareAction;
        use crate::policy::arn::{PrincipalArn, SecretArn};
        use crate::policy::compose::{Grant, resource_statements_for};
        let g = Grant {
            secret: SecretArn::parse(
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf",
            )
            .unwrap(),
            principal: PrincipalArn::parse_consumer(principal).unwrap(),
            actions: vec![ShareAction::GetSecretValue],
            version_stage: Some(stage.to_owned()),
        };
        resource_statements_for(&g, &InstallationId::default()).remove(0)
    }

    /// Issue 18 part 3: statements that differ only in their principal are one list statement; removing
    /// an entry takes its principal out, the statement with the last; other shapes (another stage) are
    /// other statements; foreign statements keep their text throughout.
    #[test]
    fn list_statements_gain_and_lose_principals_one_at_a_time() {
        const P1: &str = "arn:aws:iam::444455556666:role/a";
        const P2: &str = "arn:aws:iam::777788889999:user/b";
        let (a, b, c) = (
            listed(P1, "AWSCURRENT"),
            listed(P2, "AWSCURRENT"),
            listed(P2, "AWSPREVIOUS"),
        );
        assert!(is_list_statement(&a) && is_list_statement(&b));
        assert_eq!(a["Sid"], b["Sid"], "one shape, one Sid");
        assert_ne!(a["Sid"], c["Sid"], "the stage is part of the shape");
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        assert_eq!(upsert(&mut doc, &owner(), &a).unwrap(), Change::Added);
        assert_eq!(upsert(&mut doc, &owner(), &b).unwrap(), Change::Listed);
        assert_eq!(upsert(&mut doc, &owner(), &b).unwrap(), Change::Unchanged);
        assert_eq!(upsert(&mut doc, &owner(), &c).unwrap(), Change::Added);
        assert_eq!(doc.statements().len(), 4);
        assert_eq!(members(&doc.statements()[2]), [P1, P2]);
        assert!(covers(&doc.statements()[2], &a) && covers(&doc.statements()[2], &b));
        assert!(!covers(&doc.statements()[3], &a));
        let (ea, eb) = (entry_of(&a), entry_of(&b));
        assert_eq!(ea, format!("{} {P1}", a["Sid"].as_str().unwrap()));
        assert_eq!(split_entry(&ea), (a["Sid"].as_str().unwrap(), Some(P1)));
        // Remove P1: the statement lists P2 alone, as a string, with everything else unchanged.
        assert!(remove(&mut doc, &owner(), &ea));
        assert!(!remove(&mut doc, &owner(), &ea), "gone already");
        assert!(find_entry(&doc, &ea).is_none() && find_entry(&doc, &eb).is_some());
        let v: Value = serde_json::from_str(doc.statements()[2].raw()).unwrap();
        assert_eq!(v["Principal"], json!({"AWS": P2}));
        assert!(same_content(&doc.statements()[2], &b));
        // The last principal takes the statement with it; the foreign statements are as they were.
        assert!(remove(&mut doc, &owner(), &eb));
        assert!(remove(&mut doc, &owner(), &entry_of(&c)));
        assert_eq!(doc.render(), FOREIGN);
    }

    /// A list statement someone edited (anything but its principals) is not of its shape: the upsert
    /// says `Replaced` (the applier refuses that unless an admin repairs), and keeps the principals it
    /// listed; another installation's list statement is never touched.
    #[test]
    fn an_edited_list_statement_is_replaced_keeping_its_principals() {
        const P1: &str = "arn:aws:iam::444455556666:role/a";
        const P2: &str = "arn:aws:iam::777788889999:user/b";
        let (a, b) = (listed(P1, "AWSCURRENT"), listed(P2, "AWSCURRENT"));
        let mut edited = a.clone();
        edited["Action"] = json!([
            "secretsmanager:GetSecretValue",
            "secretsmanager:PutSecretValue"
        ]);
        let mut doc = PolicyDocument::new();
        doc.statements_mut()
            .push(RawStatement::from_value(&edited).unwrap());
        assert!(!same_shape(&doc.statements()[0], &b));
        assert_eq!(upsert(&mut doc, &owner(), &b).unwrap(), Change::Replaced);
        assert_eq!(members(&doc.statements()[0]), [P1, P2]);
        assert!(covers(&doc.statements()[0], &a) && covers(&doc.statements()[0], &b));
        let other = Owner::new("Blue7".parse().unwrap());
        assert!(!remove(&mut doc, &other, &entry_of(&a)));
        assert!(upsert(&mut doc, &other, &a).is_err());
    }

    fn keyed(principal: &str, secret: &str) -> Value {
        use crate::domain::ShareAction;
        use crate::policy::arn::{PrincipalArn, SecretArn};
        use crate::policy::compose::{Grant, key_statement_for};
        let g = Grant {
            secret: SecretArn::parse(secret).unwrap(),
            principal: PrincipalArn::parse_consumer(principal).unwrap(),
            actions: vec![ShareAction::GetSecretValue],
            version_stage: None,
        };
        key_statement_for(&g, &InstallationId::default())
    }

    const P1: &str = "arn:aws:iam::444455556666:role/a";
    const P2: &str = "arn:aws:iam::777788889999:user/b";
    const P3: &str = "arn:aws:iam::777788889999:root";
    const S1: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf";
    const S2: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:api/key-123456";
    const S3: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-other-Zz9Yy8";

    fn value(st: &RawStatement) -> Value {
        serde_json::from_str(st.raw()).unwrap()
    }

    /// No broker statement lists several principals and several secrets.
    fn assert_never_both(doc: &PolicyDocument) {
        for st in doc.statements() {
            if st.parsed().sid.as_deref().is_some_and(|s| owner().owns(s)) {
                let v = value(st);
                assert!(
                    members(st).len() == 1 || secret_patterns(&v).len() <= 1,
                    "{}",
                    st.raw()
                );
            }
        }
    }

    /// Issue 18 part 3: one principal's key statements that differ only in their secret become one
    /// secret-list statement, by the upsert cases in order: (4) the first is added as it is (a
    /// principal list of one); (3) a second secret turns that statement, which lists this principal
    /// alone, into a secret-list statement of both patterns; (2) a third joins the secret-list
    /// statement; (1) another principal's grant on a secret gets (or joins) that secret's principal
    /// list. Removing an entry takes its pattern out, the statement with the last; foreign statements
    /// keep their text throughout.
    #[test]
    fn secret_lists_gain_and_lose_patterns_one_at_a_time() {
        let (a, b, c) = (keyed(P1, S1), keyed(P1, S2), keyed(P1, S3));
        let (d, e) = (keyed(P2, S1), keyed(P3, S1));
        assert_eq!(secret_list_sid(&a), secret_list_sid(&b));
        assert_ne!(secret_list_sid(&a), secret_list_sid(&d));
        assert!(!is_secret_list_statement(&a) && is_list_statement(&a));
        assert_eq!(
            secret_list_entry(&a).unwrap().split_once(' ').unwrap().1,
            secret_patterns(&a)[0]
        );
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        let foreign: Vec<String> = doc
            .statements()
            .iter()
            .map(|s| s.raw().to_owned())
            .collect();
        // (4)
        assert_eq!(upsert(&mut doc, &owner(), &a).unwrap(), Change::Added);
        assert!(same_content(&doc.statements()[2], &a));
        // (3): the statement of P1 alone for S1 becomes P1's secret-list statement of S1 and S2.
        assert_eq!(upsert(&mut doc, &owner(), &b).unwrap(), Change::Listed);
        assert_eq!(doc.statements().len(), 3);
        let y = value(&doc.statements()[2]);
        assert!(
            is_secret_list_statement(&y) && !is_list_statement(&y),
            "{y}"
        );
        assert_eq!(y["Sid"].as_str(), secret_list_sid(&a).as_deref());
        assert_eq!(y["Principal"], json!({"AWS": P1}));
        assert_eq!(
            y["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"],
            json!([secret_patterns(&a)[0], secret_patterns(&b)[0]])
        );
        // Everything but the patterns is the composed statement's.
        assert_eq!(secret_shape(&y), secret_shape(&a));
        for st in [&a, &b] {
            assert_eq!(upsert(&mut doc, &owner(), st).unwrap(), Change::Unchanged);
            assert!(holds(&doc, st) && find_entry(&doc, &entry_of(st)).is_some());
            assert_eq!(edited(&doc, st), None);
        }
        // (2)
        assert_eq!(upsert(&mut doc, &owner(), &c).unwrap(), Change::Listed);
        assert_eq!(upsert(&mut doc, &owner(), &c).unwrap(), Change::Unchanged);
        assert_eq!(doc.statements().len(), 3);
        assert_eq!(
            entries_held(&doc.statements()[2]),
            [entry_of(&a), entry_of(&b), entry_of(&c)]
        );
        // (1) and (4): another principal on S1 gets S1's principal list (the Sid P1's entry names, now
        // a statement of its own again), which a third principal joins; P1 stays in its secret list.
        assert_eq!(upsert(&mut doc, &owner(), &d).unwrap(), Change::Added);
        assert_eq!(upsert(&mut doc, &owner(), &e).unwrap(), Change::Listed);
        assert_eq!(doc.statements().len(), 4);
        assert_eq!(members(&doc.statements()[3]), [P2, P3]);
        assert_eq!(doc.statements()[3].parsed().sid, Some(sid_of(&a)));
        assert!(holds(&doc, &a) && holds(&doc, &d) && holds(&doc, &e));
        assert_never_both(&doc);
        // Remove P1's S2: the pattern leaves the secret list, nothing else changes.
        let before_list = doc.statements()[3].raw().to_owned();
        assert!(remove(&mut doc, &owner(), &entry_of(&b)));
        assert!(!remove(&mut doc, &owner(), &entry_of(&b)), "gone already");
        assert!(find_entry(&doc, &entry_of(&b)).is_none() && !holds(&doc, &b));
        assert!(holds(&doc, &a) && holds(&doc, &c));
        assert_eq!(
            secret_patterns(&value(&doc.statements()[2])),
            [
                secret_patterns(&a)[0].clone(),
                secret_patterns(&c)[0].clone()
            ]
        );
        assert_eq!(doc.statements()[3].raw(), before_list);
        // Another installation removes nothing.
        let other = Owner::new("Blue7".parse().unwrap());
        assert!(!remove(&mut doc, &other, &entry_of(&a)));
        // Down to one pattern: a string, still P1's secret-list statement.
        assert!(remove(&mut doc, &owner(), &entry_of(&a)));
        let y = value(&doc.statements()[2]);
        assert!(is_secret_list_statement(&y));
        assert_eq!(
            y["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"],
            json!(secret_patterns(&c)[0])
        );
        // The last pattern takes the statement with it; then the principal list empties.
        assert!(remove(&mut doc, &owner(), &entry_of(&c)));
        assert_eq!(doc.statements().len(), 3);
        assert!(remove(&mut doc, &owner(), &entry_of(&d)));
        assert!(remove(&mut doc, &owner(), &entry_of(&e)));
        assert_eq!(doc.render(), FOREIGN);
        let after: Vec<String> = doc
            .statements()
            .iter()
            .map(|s| s.raw().to_owned())
            .collect();
        assert_eq!(after, foreign);
    }

    /// A statement listing several principals never gains a second secret: the principal's grant on
    /// another secret is a statement of its own, which becomes a secret list when a third comes.
    /// Statements of other regions (another `kms:ViaService`, a replica's key), organizations (`"*"`)
    /// and other installations never join a secret list.
    #[test]
    fn secret_lists_never_join_principal_lists_regions_organizations_or_installations() {
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        for st in [keyed(P1, S1), keyed(P2, S1)] {
            upsert(&mut doc, &owner(), &st).unwrap();
        }
        assert_eq!(
            upsert(&mut doc, &owner(), &keyed(P1, S2)).unwrap(),
            Change::Added
        );
        assert_eq!(members(&doc.statements()[2]), [P1, P2]);
        assert_eq!(
            upsert(&mut doc, &owner(), &keyed(P1, S3)).unwrap(),
            Change::Listed
        );
        assert_eq!(doc.statements().len(), 4);
        assert!(is_secret_list_statement(&value(&doc.statements()[3])));
        assert_never_both(&doc);
        // Another region's statement of the same principal and name: another ViaService.
        let west = "arn:aws:secretsmanager:us-west-2:111122223333:secret:db-AbCdEf";
        let w = keyed(P1, west);
        assert_ne!(secret_list_sid(&w), secret_list_sid(&keyed(P1, S1)));
        assert_eq!(upsert(&mut doc, &owner(), &w).unwrap(), Change::Added);
        // Organizations: `"*"` narrowed by a condition has no secret shape.
        let (o1, o2) = (keyed("o-a1b2c3d4e5", S1), keyed("o-a1b2c3d4e5", S2));
        assert!(secret_shape(&o1).is_none() && secret_list_sid(&o1).is_none());
        assert_eq!(upsert(&mut doc, &owner(), &o1).unwrap(), Change::Added);
        assert_eq!(upsert(&mut doc, &owner(), &o2).unwrap(), Change::Added);
        assert_never_both(&doc);
        // Another installation's one-principal statement is never turned into our secret list.
        let blue = Owner::new("Blue7".parse().unwrap());
        let theirs = {
            use crate::domain::ShareAction;
            use crate::policy::arn::{PrincipalArn, SecretArn};
            use crate::policy::compose::{Grant, key_statement_for};
            key_statement_for(
                &Grant {
                    secret: SecretArn::parse(S1).unwrap(),
                    principal: PrincipalArn::parse(P3).unwrap(),
                    actions: vec![ShareAction::GetSecretValue],
                    version_stage: None,
                },
                &"Blue7".parse().unwrap(),
            )
        };
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        assert_eq!(upsert(&mut doc, &blue, &theirs).unwrap(), Change::Added);
        let raw = doc.statements()[2].raw().to_owned();
        assert_eq!(
            upsert(&mut doc, &owner(), &keyed(P3, S2)).unwrap(),
            Change::Added
        );
        assert_eq!(doc.statements()[2].raw(), raw);
        assert!(!remove(&mut doc, &owner(), &entry_of(&theirs)));
    }

    /// AWS shows a deleted principal's unique id in its place: the secret-list statement's Sid no longer
    /// matches its content. It is never merged into (a principal re-created with that ARN is someone
    /// new: its grants get statements of their own), and the share's second entry name
    /// ([`secret_list_entry`]) still finds and removes its pattern. An owner's edit of a secret-list
    /// statement is [`edited`]; the upsert replaces it keeping the patterns it named.
    #[test]
    fn a_deleted_principal_s_or_an_edited_secret_list_statement() {
        let (a, b, c) = (keyed(P1, S1), keyed(P1, S2), keyed(P1, S3));
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        upsert(&mut doc, &owner(), &a).unwrap();
        upsert(&mut doc, &owner(), &b).unwrap();
        let mut gone = value(&doc.statements()[2]);
        gone["Principal"] = json!({"AWS": "AROA3XFRBF535PLBIFPI4"});
        doc.statements_mut()[2] = RawStatement::from_value(&gone).unwrap();
        assert!(!is_secret_list_statement(&gone));
        assert!(find_entry(&doc, &entry_of(&a)).is_none() && !holds(&doc, &a));
        let (ea, eb) = (
            secret_list_entry(&a).unwrap(),
            secret_list_entry(&b).unwrap(),
        );
        assert!(find_entry(&doc, &ea).is_some() && find_entry(&doc, &eb).is_some());
        assert_eq!(
            edited(&doc, &c),
            None,
            "a deleted principal's statement is no edit"
        );
        assert_eq!(upsert(&mut doc, &owner(), &c).unwrap(), Change::Added);
        assert!(same_content(&doc.statements()[3], &c));
        assert_eq!(
            doc.statements()[2].raw(),
            RawStatement::from_value(&gone).unwrap().raw()
        );
        assert!(remove(&mut doc, &owner(), &ea));
        assert!(find_entry(&doc, &ea).is_none() && find_entry(&doc, &eb).is_some());
        assert!(remove(&mut doc, &owner(), &eb));
        assert_eq!(doc.statements().len(), 3);
        // An edit: the owner added a condition to P1's secret list.
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        upsert(&mut doc, &owner(), &a).unwrap();
        upsert(&mut doc, &owner(), &b).unwrap();
        let mut changed = value(&doc.statements()[2]);
        changed["Condition"]["Bool"] = json!({"aws:SecureTransport": "true"});
        doc.statements_mut()[2] = RawStatement::from_value(&changed).unwrap();
        let y = secret_list_sid(&a).unwrap();
        assert_eq!(edited(&doc, &a), Some(y.clone()));
        assert_eq!(edited(&doc, &c), Some(y.clone()));
        assert_eq!(upsert(&mut doc, &owner(), &c).unwrap(), Change::Replaced);
        assert_eq!(doc.statements().len(), 3);
        let back = value(&doc.statements()[2]);
        assert!(is_secret_list_statement(&back));
        assert_eq!(secret_patterns(&back).len(), 3);
        assert!(holds(&doc, &a) && holds(&doc, &b) && holds(&doc, &c));
    }

    /// Found by the `merge` fuzz target: a statement with a float that serde_json does not read back
    /// exactly was `Replaced` on every upsert instead of `Unchanged`.
    #[test]
    fn an_upsert_repeated_is_unchanged_whatever_the_numbers() {
        let mut s = ours(3);
        s["Condition"] = json!({"NumericLessThan": {"x:n": [1.28027698949781e-158, 0.1, 1e300]}});
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        assert_eq!(upsert(&mut doc, &owner(), &s).unwrap(), Change::Added);
        assert_eq!(upsert(&mut doc, &owner(), &s).unwrap(), Change::Unchanged);
        let mut again = PolicyDocument::parse(&doc.render()).unwrap();
        assert_eq!(upsert(&mut again, &owner(), &s).unwrap(), Change::Unchanged);
    }

    #[test]
    fn refuses_statements_without_a_broker_sid() {
        let mut doc = PolicyDocument::new();
        let mut s = ours(1);
        s["Sid"] = json!("Mine");
        assert!(upsert(&mut doc, &owner(), &s).is_err());
    }

    /// Issue 13 item 9 / DESIGN.md 4.7: two brokers on one account never touch each other's statements,
    /// and a look-alike Sid (the bare prefix, a hand-written `SecretBroker...`) is foreign. An earlier-
    /// scheme Sid is ours only when a share of ours relied on it (given to the Owner).
    #[test]
    fn ownership_is_exact_between_installations_and_schemes() {
        let a = Owner::new("Main".parse().unwrap());
        let b = Owner::new("Blue7".parse().unwrap());
        let legacy = format!("{SID_PREFIX}S{:016x}", 9);
        let other_legacy = format!("{SID_PREFIX}K{:016x}", 10);
        let a_legacy = a.clone().with_legacy([legacy.clone()]);
        let theirs = json!({"Sid": format!("{SID_PREFIX}Blue7S{:016x}", 3), "Effect": "Allow",
               "Principal": {"AWS": "arn:aws:iam::999988887777:root"},
               "Action": "secretsmanager:GetSecretValue", "Resource": "*"});
        let mut old = ours(9);
        old["Sid"] = json!(legacy);
        let mut old2 = ours(10);
        old2["Sid"] = json!(other_legacy);
        let mut lookalike = ours(11);
        lookalike["Sid"] = json!("SecretBrokerTeamGrant");
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        for st in [&theirs, &old, &old2, &lookalike] {
            doc.statements_mut()
                .push(RawStatement::from_value(st).unwrap());
        }
        upsert(&mut doc, &a, &ours(1)).unwrap();
        let before = doc.render();
        // B cannot remove or overwrite A's statement, nor A B's; neither may write the other's Sid.
        assert!(!remove(&mut doc, &b, &sid(1)));
        assert!(!remove(&mut doc, &a, theirs["Sid"].as_str().unwrap()));
        assert!(upsert(&mut doc, &a, &theirs).is_err());
        assert!(upsert(&mut doc, &b, &ours(1)).is_err());
        // Earlier-scheme statements: only the one a share of ours relied on, and never written anew.
        assert!(!remove(&mut doc, &a, &legacy));
        assert!(!remove(&mut doc, &a_legacy, &other_legacy));
        assert!(!remove(&mut doc, &a_legacy, "SecretBrokerTeamGrant"));
        assert!(upsert(&mut doc, &a_legacy, &old).is_err());
        assert_eq!(doc.render(), before);
        assert_eq!(broker_sids(&doc, &a), [sid(1)]);
        assert_eq!(broker_sids(&doc, &a_legacy), [legacy.clone(), sid(1)]);
        assert_eq!(
            broker_sids(&doc, &b),
            [theirs["Sid"].as_str().unwrap().to_owned()]
        );
        assert!(remove(&mut doc, &a_legacy, &legacy));
        assert!(remove(&mut doc, &a, &sid(1)));
        // Everything else, byte for byte.
        let mut expected = PolicyDocument::parse(FOREIGN).unwrap();
        for st in [&theirs, &old2, &lookalike] {
            expected
                .statements_mut()
                .push(RawStatement::from_value(st).unwrap());
        }
        assert_eq!(doc.render(), expected.render());
    }
}
