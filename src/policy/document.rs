//! An IAM policy document that round-trips real-world policies.
//!
//! Each statement keeps its exact JSON text (a [`RawValue`]): unknown fields, key order, spacing and
//! number formatting of statements the broker does not own survive any merge byte for byte. A typed view
//! ([`Statement`]) of each statement is parsed alongside for linting and evaluation. Top-level members
//! (`Version`, `Id`, anything else) keep their order and text too; an unmodified document renders as the
//! exact text it was parsed from.

use std::fmt;

use serde_json::Value;
use serde_json::value::RawValue;

/// Why a document could not be parsed, with the path of the offending element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err(path: &str, msg: impl fmt::Display) -> ParseError {
    ParseError(format!("{path}: {msg}"))
}

/// Refuses JSON text with a member name twice in one object, at any depth. serde_json keeps the last
/// of two equal names, so `{"Statement": [Deny], "Statement": [Allow]}` would read as the Allow alone;
/// what AWS makes of such a document is not documented, and a reader (or the broker) could be shown one
/// statement while AWS applies the other. Refusing it is the only answer that cannot be a false proof.
fn reject_duplicate_members(text: &str) -> Result<(), ParseError> {
    use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

    struct Checked;
    struct CheckedVisitor;
    impl<'de> Deserialize<'de> for Checked {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(CheckedVisitor)
        }
    }
    impl<'de> Visitor<'de> for CheckedVisitor {
        type Value = Checked;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(A::Error::custom(format!(
                        "the member {key:?} appears twice in one object: write it once"
                    )));
                }
                map.next_value::<Checked>()?;
            }
            Ok(Checked)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
            while seq.next_element::<Checked>()?.is_some() {}
            Ok(Checked)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
            Ok(Checked)
        }
        fn visit_unit<E>(self) -> Result<Checked, E> {
            Ok(Checked)
        }
    }
    serde_json::from_str::<Checked>(text)
        .map(|_| ())
        .map_err(|e| ParseError(format!("not a valid policy: {e}")))
}

/// Allow or Deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Effect {
    /// `"Allow"`
    Allow,
    /// `"Deny"`
    Deny,
}

/// The value of `Principal` / `NotPrincipal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// `"*"`: everyone (including anonymous callers).
    Any,
    /// `{"AWS": ..., "Service": ..., ...}`: principal type to its values, in document order.
    Typed(Vec<(String, Vec<String>)>),
}

impl Principal {
    /// The values of one type (`AWS`, `Service`, ...).
    pub fn values(&self, kind: &str) -> &[String] {
        match self {
            Principal::Any => &[],
            Principal::Typed(v) => v
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(_, vals)| vals.as_slice())
                .unwrap_or(&[]),
        }
    }

    /// Whether this names everyone: `"*"`, `{"AWS": "*"}`, or any value with a wildcard.
    pub fn is_wildcard(&self) -> bool {
        match self {
            Principal::Any => true,
            Principal::Typed(v) => v
                .iter()
                .flat_map(|(_, vals)| vals)
                .any(|p| p.contains('*') || p.contains('?')),
        }
    }
}

/// One condition operator block: `"StringEquals": {"key": ["v1", "v2"]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionBlock {
    /// The operator as written, e.g. `ForAnyValue:StringEqualsIfExists`.
    pub operator: String,
    /// Key to values, in document order. Booleans and numbers are kept as their JSON text.
    pub entries: Vec<(String, Vec<String>)>,
}

/// The typed view of one statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Statement {
    /// `Sid`, if any.
    pub sid: Option<String>,
    /// `Effect`.
    pub effect: Option<Effect>,
    /// `Principal`.
    pub principal: Option<Principal>,
    /// `NotPrincipal`.
    pub not_principal: Option<Principal>,
    /// `Action`.
    pub action: Option<Vec<String>>,
    /// `NotAction`.
    pub not_action: Option<Vec<String>>,
    /// `Resource`.
    pub resource: Option<Vec<String>>,
    /// `NotResource`.
    pub not_resource: Option<Vec<String>>,
    /// `Condition` blocks in document order.
    pub condition: Vec<ConditionBlock>,
    /// Names of members IAM does not define (kept in the text; the evaluator refuses to guess).
    pub unknown_fields: Vec<String>,
}

impl Statement {
    /// The effect (parsing guarantees it is present).
    pub fn effect(&self) -> Effect {
        self.effect.unwrap_or(Effect::Deny)
    }
}

/// A statement: its exact text and its typed view.
#[derive(Debug, Clone)]
pub struct RawStatement {
    raw: Box<RawValue>,
    parsed: Statement,
}

impl RawStatement {
    /// The statement's JSON exactly as it appears in the document.
    pub fn raw(&self) -> &str {
        self.raw.get()
    }
    /// The typed view.
    pub fn parsed(&self) -> &Statement {
        &self.parsed
    }
    /// Builds a statement from a JSON value (compact rendering).
    pub fn from_value(v: &Value) -> Result<Self, ParseError> {
        // The compact text, written straight into the raw value (it is valid JSON by construction);
        // the typed view is parsed from that text, so it is exactly what a reader of the text sees.
        let raw = serde_json::value::to_raw_value(v).map_err(|e| err("Statement", e))?;
        let value: Value = serde_json::from_str(raw.get()).map_err(|e| err("Statement", e))?;
        let parsed = parse_statement(&value, "Statement")?;
        Ok(Self { raw, parsed })
    }
    fn from_text(text: &str, path: &str) -> Result<Self, ParseError> {
        let raw = RawValue::from_string(text.to_owned()).map_err(|e| err(path, e))?;
        let value: Value = serde_json::from_str(text).map_err(|e| err(path, e))?;
        let parsed = parse_statement(&value, path)?;
        Ok(Self { raw, parsed })
    }
}

impl PartialEq for RawStatement {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get()
    }
}

/// How `Statement` was written in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Object,
    Array,
}

/// A policy document.
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    /// Top-level members in order, with their raw text; the `Statement` member's text is not used for
    /// rendering (the statements are).
    members: Vec<(String, Box<RawValue>)>,
    statements: Vec<RawStatement>,
    form: Form,
    /// The parsed text and its statements, to render an unchanged document exactly as it was.
    original: Option<(String, Vec<RawStatement>)>,
}

/// The `Version` the broker writes in new documents.
pub const VERSION: &str = "2012-10-17";

impl PolicyDocument {
    /// A new document with `Version` and no statements.
    pub fn new() -> Self {
        Self {
            members: vec![(
                "Version".into(),
                RawValue::from_string(format!("\"{VERSION}\"")).unwrap_or_else(|_| {
                    // A quoted literal is always valid JSON.
                    unreachable!("static JSON")
                }),
            )],
            statements: Vec::new(),
            form: Form::Array,
            original: None,
        }
    }

    /// Parses a policy document. Errors name the offending element (`Statement[2].Effect: ...`).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ParseError(format!("not valid JSON: {e}")))?;
        reject_duplicate_members(text)?;
        if !value.is_object() {
            return Err(ParseError(
                "a policy document must be a JSON object with a Statement".into(),
            ));
        }
        let members: indexmap::IndexMap<String, Box<RawValue>> =
            serde_json::from_str(text).map_err(|e| ParseError(format!("not valid JSON: {e}")))?;
        let members: Vec<(String, Box<RawValue>)> = members.into_iter().collect();
        for (k, v) in &members {
            if k == "Version" {
                let ver: Value = serde_json::from_str(v.get()).map_err(|e| err("Version", e))?;
                match ver.as_str() {
                    Some("2012-10-17") | Some("2008-10-17") => {}
                    _ => {
                        return Err(err(
                            "Version",
                            format!(
                                "must be \"2012-10-17\" (or the older \"2008-10-17\"), found {ver}"
                            ),
                        ));
                    }
                }
            }
        }
        let (statements, form) = match members.iter().find(|(k, _)| k == "Statement") {
            None => return Err(ParseError("the document has no Statement".into())),
            Some((_, raw)) => {
                let text = raw.get().trim_start();
                if text.starts_with('[') {
                    let items: Vec<Box<RawValue>> =
                        serde_json::from_str(raw.get()).map_err(|e| err("Statement", e))?;
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.into_iter().enumerate() {
                        out.push(RawStatement::from_text(
                            item.get(),
                            &format!("Statement[{i}]"),
                        )?);
                    }
                    (out, Form::Array)
                } else if text.starts_with('{') {
                    (
                        vec![RawStatement::from_text(raw.get(), "Statement")?],
                        Form::Object,
                    )
                } else {
                    return Err(err("Statement", "must be an object or an array of objects"));
                }
            }
        };
        let original = Some((text.to_owned(), statements.clone()));
        Ok(Self {
            members,
            statements,
            form,
            original,
        })
    }

    /// The statements in order.
    pub fn statements(&self) -> &[RawStatement] {
        &self.statements
    }

    /// Mutable access for merge.
    pub(crate) fn statements_mut(&mut self) -> &mut Vec<RawStatement> {
        &mut self.statements
    }

    /// True when no statement is left.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// The document's text: exactly the parsed text if the statements are unchanged; otherwise the
    /// top-level members in their order (compact) with each statement's exact text.
    pub fn render(&self) -> String {
        if let Some((text, stmts)) = &self.original
            && *stmts == self.statements
        {
            return text.clone();
        }
        let mut out = String::from("{");
        let mut wrote_statement = false;
        let mut first = true;
        let mut push_member = |out: &mut String, key: &str, value: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&Value::String(key.to_owned()).to_string());
            out.push(':');
            out.push_str(value);
        };
        let statements = self.render_statements();
        for (k, v) in &self.members {
            if k == "Statement" {
                push_member(&mut out, k, &statements);
                wrote_statement = true;
            } else {
                push_member(&mut out, k, v.get());
            }
        }
        if !wrote_statement {
            push_member(&mut out, "Statement", &statements);
        }
        out.push('}');
        out
    }

    fn render_statements(&self) -> String {
        if self.form == Form::Object && self.statements.len() == 1 {
            return self.statements[0].raw().to_owned();
        }
        let mut s = String::from("[");
        for (i, st) in self.statements.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(st.raw());
        }
        s.push(']');
        s
    }

    /// The `Version`, if the document has one.
    pub fn version(&self) -> Option<String> {
        self.members
            .iter()
            .find(|(k, _)| k == "Version")
            .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok())
    }
}

impl Default for PolicyDocument {
    fn default() -> Self {
        Self::new()
    }
}

/// A new document (`Version` 2012-10-17) holding these statements in order, built without a text
/// round trip: what a caller that already holds parsed statements (the fuzz harness) needs.
impl FromIterator<RawStatement> for PolicyDocument {
    fn from_iter<I: IntoIterator<Item = RawStatement>>(iter: I) -> Self {
        let mut doc = Self::new();
        doc.statements.extend(iter);
        doc
    }
}

fn strings(v: &Value, path: &str, what: &str) -> Result<Vec<String>, ParseError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err(&format!("{path}[{i}]"), format!("{what} must be a string")))
            })
            .collect(),
        Value::Array(_) => Err(err(path, format!("{what} must not be an empty array"))),
        _ => Err(err(
            path,
            format!("{what} must be a string or an array of strings"),
        )),
    }
}

fn parse_principal(v: &Value, path: &str) -> Result<Principal, ParseError> {
    match v {
        Value::String(s) if s == "*" => Ok(Principal::Any),
        Value::Object(m) if !m.is_empty() => {
            let mut out = Vec::with_capacity(m.len());
            for (k, val) in m {
                out.push((
                    k.clone(),
                    strings(val, &format!("{path}.{k}"), "a principal")?,
                ));
            }
            Ok(Principal::Typed(out))
        }
        _ => Err(err(
            path,
            "must be \"*\" or an object such as {\"AWS\": \"arn:aws:iam::444455556666:role/app\"}",
        )),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_condition(v: &Value, path: &str) -> Result<Vec<ConditionBlock>, ParseError> {
    let Value::Object(ops) = v else {
        return Err(err(
            path,
            "must be an object of operators, e.g. {\"StringEquals\": {...}}",
        ));
    };
    let mut blocks = Vec::with_capacity(ops.len());
    for (op, entries) in ops {
        let p = format!("{path}.{op}");
        let Value::Object(keys) = entries else {
            return Err(err(&p, "must be an object of condition keys to values"));
        };
        let mut out = Vec::with_capacity(keys.len());
        for (key, vals) in keys {
            let kp = format!("{p}.{key}");
            let values = match vals {
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        scalar_text(x).ok_or_else(|| {
                            err(&format!("{kp}[{i}]"), "must be a string, number or boolean")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                other => vec![scalar_text(other).ok_or_else(|| {
                    err(&kp, "must be a string, number, boolean or an array of them")
                })?],
            };
            out.push((key.clone(), values));
        }
        blocks.push(ConditionBlock {
            operator: op.clone(),
            entries: out,
        });
    }
    Ok(blocks)
}

fn parse_statement(v: &Value, path: &str) -> Result<Statement, ParseError> {
    let Value::Object(m) = v else {
        return Err(err(path, "a statement must be a JSON object"));
    };
    let mut s = Statement::default();
    for (k, val) in m {
        let p = format!("{path}.{k}");
        match k.as_str() {
            "Sid" => {
                s.sid = Some(
                    val.as_str()
                        .ok_or_else(|| err(&p, "must be a string"))?
                        .to_owned(),
                );
            }
            "Effect" => {
                s.effect = Some(match val.as_str() {
                    Some("Allow") => Effect::Allow,
                    Some("Deny") => Effect::Deny,
                    _ => {
                        return Err(err(
                            &p,
                            format!("must be \"Allow\" or \"Deny\", found {val}"),
                        ));
                    }
                });
            }
            "Principal" => s.principal = Some(parse_principal(val, &p)?),
            "NotPrincipal" => s.not_principal = Some(parse_principal(val, &p)?),
            "Action" => s.action = Some(strings(val, &p, "an action")?),
            "NotAction" => s.not_action = Some(strings(val, &p, "an action")?),
            "Resource" => s.resource = Some(strings(val, &p, "a resource")?),
            "NotResource" => s.not_resource = Some(strings(val, &p, "a resource")?),
            "Condition" => s.condition = parse_condition(val, &p)?,
            other => s.unknown_fields.push(other.to_owned()), // kept verbatim in the raw text
        }
    }
    if s.effect.is_none() {
        return Err(err(path, "has no Effect (\"Allow\" or \"Deny\")"));
    }
    if s.action.is_some() && s.not_action.is_some() {
        return Err(err(path, "has both Action and NotAction"));
    }
    if s.action.is_none() && s.not_action.is_none() {
        return Err(err(path, "has neither Action nor NotAction"));
    }
    if s.resource.is_some() && s.not_resource.is_some() {
        return Err(err(path, "has both Resource and NotResource"));
    }
    if s.principal.is_some() && s.not_principal.is_some() {
        return Err(err(path, "has both Principal and NotPrincipal"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_statements_equals_parsing_the_rendered_document() {
        let doc = PolicyDocument::parse(REAL).expect("parses");
        let built: PolicyDocument = doc.statements().iter().cloned().collect();
        assert_eq!(built.statements(), doc.statements());
        assert_eq!(built.version().as_deref(), Some(VERSION));
        let reparsed = PolicyDocument::parse(&built.render()).expect("renders valid JSON");
        assert_eq!(reparsed.statements(), doc.statements());
        let empty: PolicyDocument = std::iter::empty().collect();
        assert!(empty.is_empty());
        assert!(PolicyDocument::parse(&empty.render()).is_ok());
    }

    const REAL: &str = r#"{
  "Version" : "2012-10-17",
  "Id" : "key-default-1",
  "Statement" : [ {
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : {
      "AWS" : "arn:aws:iam::111122223333:root"
    },
    "Action" : "kms:*",
    "Resource" : "*"
  }, {
    "Effect" : "Deny",
    "NotPrincipal" : { "AWS" : [ "arn:aws:iam::111122223333:role/admin" ] },
    "NotAction" : [ "kms:Describe*", "kms:Get*" ],
    "NotResource" : "arn:aws:kms:*:111122223333:key/*",
    "Condition" : { "Bool" : { "aws:SecureTransport" : false }, "NumericLessThan": {"kms:GrantCount": 10.50} },
    "x-custom" : { "kept": true }
  } ]
}"#;

    #[test]
    fn parses_and_renders_real_policies_exactly() {
        let d = PolicyDocument::parse(REAL).unwrap();
        assert_eq!(d.render(), REAL);
        assert_eq!(d.statements().len(), 2);
        let s = d.statements()[1].parsed();
        assert_eq!(s.effect(), Effect::Deny);
        assert_eq!(
            s.not_action.as_ref().unwrap(),
            &["kms:Describe*", "kms:Get*"]
        );
        assert_eq!(s.condition[0].entries[0].1, ["false"]);
        assert_eq!(
            s.condition[1].entries[0].1,
            ["10.5"],
            "the typed view reads the number; the text keeps 10.50"
        );
        assert_eq!(
            s.not_principal.as_ref().unwrap().values("AWS"),
            ["arn:aws:iam::111122223333:role/admin"]
        );
        assert_eq!(d.version().as_deref(), Some("2012-10-17"));
    }

    #[test]
    fn statement_as_object() {
        let text = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"secretsmanager:GetSecretValue","Resource":"*"}}"#;
        let d = PolicyDocument::parse(text).unwrap();
        assert_eq!(d.render(), text);
        assert_eq!(d.statements()[0].parsed().principal, Some(Principal::Any));
        assert!(d.version().is_none());
    }

    #[test]
    fn errors_point_at_the_element() {
        for (text, needle) in [
            ("{", "not valid JSON"),
            ("[]", "JSON object"),
            (r#"{"Version":"2012-10-17"}"#, "no Statement"),
            (r#"{"Version":"2019-01-01","Statement":[]}"#, "Version"),
            (
                r#"{"Statement":"x"}"#,
                "Statement: must be an object or an array",
            ),
            (
                r#"{"Statement":[{"Effect":"allow","Action":"a"}]}"#,
                "Statement[0].Effect: must be \"Allow\" or \"Deny\"",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"a"},{"Effect":"Allow"}]}"#,
                "Statement[1]: has neither Action",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":[]}]}"#,
                "Statement[0].Action: an action must not be an empty array",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"a","Principal":{"AWS":[1]}}]}"#,
                "Statement[0].Principal.AWS[0]",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"a","Principal":"me"}]}"#,
                "Statement[0].Principal: must be",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"a","Condition":{"StringEquals":{"k":null}}}]}"#,
                "Statement[0].Condition.StringEquals.k",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"a","NotAction":"b"}]}"#,
                "both Action and NotAction",
            ),
        ] {
            let e = PolicyDocument::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
