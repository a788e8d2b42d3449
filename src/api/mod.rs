//! The REST API: handlers (one module per resource), extractors, problem details, the OpenAPI document
//! and the router with its layers.

pub(crate) mod audit;
pub(crate) mod checks;
pub(crate) mod extract;
pub(crate) mod fields;
pub(crate) mod health;
pub(crate) mod json;
pub(crate) mod limits;
pub(crate) mod principals;
pub mod problem;
pub(crate) mod shares;
pub mod slack;
pub(crate) mod tokens;
pub(crate) mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use base64::Engine;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_governor::GovernorLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::App;
use crate::error::{Error, FieldError, Result};

/// The OpenAPI document's fixed parts; paths come from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "secret-broker",
        description = "Brokers cross-account access to AWS Secrets Manager secrets: share requests, \
                       approvals, the three policy documents, and an append-only audit log.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "principals", description = "Consumer principals in other accounts"),
        (name = "shares", description = "Share requests and their approval"),
        (name = "access-checks", description = "Explain whether a principal can read a secret"),
        (name = "audit", description = "The tamper-evident audit log"),
        (name = "tokens", description = "Bearer tokens (admin)"),
        (name = "slack", description = "Approving from Slack: button callbacks and user links"),
        (name = "health", description = "Liveness and readiness")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `secret-broker tokens create --name N --role R`",
                    ))
                    .build(),
            ),
        );
    }
}

fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(principals::create, principals::list))
        .routes(routes!(principals::get))
        .routes(routes!(shares::create, shares::list))
        .routes(routes!(shares::get))
        .routes(routes!(shares::approve))
        .routes(routes!(shares::reject))
        .routes(routes!(shares::cancel))
        .routes(routes!(shares::revoke))
        .routes(routes!(shares::retry))
        .routes(routes!(shares::repair))
        .routes(routes!(shares::plan))
        .routes(routes!(shares::consumer))
        // Issue 21: break-glass, and approving from Slack.
        .routes(routes!(shares::break_glass))
        .routes(routes!(shares::review))
        .routes(routes!(slack::interactions))
        .routes(routes!(slack::link_create, slack::link_list))
        .routes(routes!(slack::link_delete))
        .routes(routes!(checks::create))
        .routes(routes!(checks::review))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
        // /metrics reads the database at every scrape: it stays inside the limits.
        .routes(routes!(health::metrics))
}

/// Liveness and readiness: never rate limited or shed, so a flood from a neighbour behind the same
/// address cannot make an orchestrator restart the service.
fn probe_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The router and the OpenAPI document it serves, with the responses every operation can give added
/// where the handler's annotation does not list them (so the document never misses one).
fn split() -> (Router<Arc<App>>, Router<Arc<App>>, utoipa::openapi::OpenApi) {
    let (router, mut spec) = routes().split_for_parts();
    let (probes, probe_spec) = probe_routes().split_for_parts();
    spec.merge(probe_spec);
    add_common_responses(&mut spec);
    (router, probes, spec)
}

fn add_common_responses(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for (path, item) in spec.paths.paths.iter_mut() {
        let ops = [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for op in ops.into_iter().flatten() {
            let has_body = op.request_body.is_some();
            let has_query = op
                .parameters
                .as_ref()
                .is_some_and(|ps| ps.iter().any(|p| matches!(p, utoipa::openapi::RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query))));
            let mut add = |code: &str, description: &str| {
                op.responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| problem(description).into());
            };
            if has_body || has_query {
                add("400", "The body or the query string cannot be read");
            }
            if has_body {
                add("413", "The body is larger than max_body_bytes");
                add("415", "The body is not application/json");
                add("422", "A field is invalid (errors names each)");
            }
            if path.starts_with("/v1/") || path == "/metrics" {
                add(
                    "429",
                    "Over the per-token or per-address rate limit; retry after Retry-After seconds",
                );
            }
            add(
                "503",
                "Starting, at max_concurrent_requests (retry after Retry-After seconds), or the change \
                 could not be recorded and so was not made",
            );
        }
    }
}

/// The OpenAPI document the service serves at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    split().2
}

/// The OpenAPI document as pretty JSON with a trailing newline (the form committed in `openapi/`).
pub fn openapi_json() -> String {
    let mut s = openapi().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

/// The API's router with its layers, `pages` (the console's) merged in inside the same limits and
/// outside the OpenAPI document. [`crate::server::router`] gives it the console.
pub(crate) fn router(app: Arc<App>, pages: Router<Arc<App>>) -> Router {
    let timeout = app.config.request_timeout.0;
    let body_limit = app.config.max_body_bytes.0;
    let max_concurrent = app.config.max_concurrent_requests.0;
    let per_address = app
        .config
        .max_concurrent_per_address
        .0
        .map(|n| limits::PerAddressLayer::new(n as usize));
    let address_limit = app.config.address_rate_limit.0.map(|n| {
        GovernorLayer::new(limits::config(limits::AddressKey, n))
            .error_handler(limits::too_many("address", n))
    });
    let token_limit = app.config.token_rate_limit.0.map(|n| {
        GovernorLayer::new(limits::config(limits::CredentialKey, n))
            .error_handler(limits::too_many("token", n))
    });
    let (api, probes, spec) = split();
    // The limits wrap the API and the docs; the probes are merged in after, outside them.
    let limited = api
        .merge(SwaggerUi::new("/docs").url("/openapi.json", spec))
        // The console's pages: inside the same limits, outside the OpenAPI document.
        .merge(pages)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .option_layer(address_limit)
                .option_layer(token_limit)
                .option_layer(per_address)
                .layer(axum::error_handling::HandleErrorLayer::new(
                    limits::overloaded,
                ))
                .load_shed()
                // One semaphore for the whole router: Router::layer makes a service per route, and a
                // plain concurrency_limit would give each route its own allowance.
                .layer(GlobalConcurrencyLimitLayer::new(max_concurrent)),
        );
    limited
        .merge(probes)
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(app)
        .layer(
            ServiceBuilder::new()
                // Request id, log span and access line, metrics, problem details and the security
                // headers in one middleware (see `edge`).
                .layer(axum::middleware::from_fn(edge))
                .layer(CatchPanicLayer::new())
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout,
                )),
        )
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every request goes through, outermost, in one future (issue 19: this was ten layers, three of
/// them boxing a future of their own, and the request id, the span and the metrics each copied the
/// route): in order,
/// - the request id: a caller's `X-Request-Id` is kept only when plain and sent once; otherwise a
///   random (version 4) UUID replaces it, so the log span and the audit row carry the same, harmless
///   value; the response carries it back (unless the handler set one);
/// - the `request` span (method, route, request id, and the caller once authenticated), entered
///   while the request is handled, and at its end the `access` event (status, latency);
/// - problem details for an error answer without a body of its own ([`problem::problemize`]);
/// - the request counter and latency histogram by method, matched route and status;
/// - `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`,
///   and `Cache-Control: no-store` unless the handler set one.
async fn edge(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let start = std::time::Instant::now();
    let request_id = {
        let mut given = req.headers().get_all(X_REQUEST_ID).iter();
        match (given.next(), given.next()) {
            (Some(v), None) if is_plain_request_id(v.as_bytes()) => v.clone(),
            _ => fresh_request_id(),
        }
    };
    req.headers_mut().insert(X_REQUEST_ID, request_id.clone());
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "<unmatched>".into());
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = %route,
        // A plain id or a UUID: ASCII.
        request_id = %request_id.to_str().unwrap_or(""),
        caller = tracing::field::Empty,
    );
    let resp = next.run(req).instrument(span.clone()).await;
    let mut resp = problem::problemize(resp).await;
    let status = resp.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = start.elapsed().as_secs_f64() * 1000.0,
            "access"
        );
    });
    let labels = crate::metrics::HttpLabels {
        method,
        route,
        status,
    };
    let m = crate::metrics::metrics();
    m.http_requests.get_or_create(&labels).inc();
    m.http_duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    let headers = resp.headers_mut();
    if !headers.contains_key(X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, request_id);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A new request id: a random (version 4) UUID, from the thread's CSPRNG (not a system call per
/// request, as `Uuid::new_v4` makes without its fast-rng feature).
fn fresh_request_id() -> HeaderValue {
    let bits = rand::random::<u128>() & 0xFFFF_FFFF_FFFF_4FFF_BFFF_FFFF_FFFF_FFFF
        | 0x0000_0000_0000_4000_8000_0000_0000_0000;
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::from_u128(bits)
        .hyphenated()
        .encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Longest `X-Request-Id` kept from a caller.
pub(crate) const MAX_REQUEST_ID: usize = 64;

/// Whether a caller's request id is kept: 1 to [`MAX_REQUEST_ID`] letters, digits, `-`, `_` and `.`.
pub(crate) fn is_plain_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A method as metrics and the audit log name it: standard methods by name, anything else (a client may
/// send any token) as `other`, so made-up methods cannot create label values without end.
pub(crate) fn method_label(m: &axum::http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The name a refusal is audited under: the caller's canonical name, or `anonymous`.
pub(crate) fn actor_of(auth: &Result<crate::domain::Caller>) -> String {
    auth.as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_else(|_| "anonymous".into())
}

/// Runs a mutation of a share, token or principal and audits its refusal: a 403, 409 or 429 outcome is
/// recorded as `<resource>.refused` with the attempted action and its target, coalesced per caller
/// ([`crate::refusals`]). A 401 is audited as `auth.failed` by the extractor, not here. If the row
/// cannot be written the answer is 503.
pub(crate) async fn guarded<T>(
    app: &App,
    rid: &extract::RequestId,
    actor: String,
    resource: crate::workflow::Resource,
    target: Option<String>,
    attempted: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let res = fut.await;
    if let Err(err) = &res
        && matches!(err.status(), 403 | 409 | 429)
    {
        let origin = crate::workflow::Origin {
            actor,
            request_id: rid.0.clone(),
        };
        crate::workflow::record_refusal(app, origin, resource, target, attempted, err).await?;
    }
    res
}

/// Page size bounds for every list endpoint.
pub(crate) const DEFAULT_LIMIT: usize = 50;
/// Largest page.
pub const MAX_LIMIT: usize = 500;

/// Validates a `limit` query parameter.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Error::field(
            "limit",
            format!("{n} is out of range: use 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"),
        )),
    }
}

/// Encodes a position as an opaque cursor.
pub(crate) fn encode_cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{seq}"))
}

/// Longest cursor accepted (the service's own are about 16 characters).
pub(crate) const MAX_CURSOR: usize = 64;

/// Decodes a cursor from a previous page's `next_cursor`.
pub(crate) fn decode_cursor(cursor: Option<&str>) -> Result<Option<i64>> {
    let Some(c) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if c.len() > MAX_CURSOR {
        return Err(Error::field(
            "cursor",
            format!(
                "is longer than {MAX_CURSOR} characters: pass the next_cursor of the previous page unchanged"
            ),
        ));
    }
    let bad = || {
        Error::field(
            "cursor",
            "not a cursor this service issued: pass the next_cursor of the previous page unchanged",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let seq = text
        .strip_prefix("v1:")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(bad)?;
    Ok(Some(seq))
}

/// Builds a page from `limit + 1` fetched rows: the extra row only says there is a next page.
pub(crate) fn paginate<T>(mut rows: Vec<(i64, T)>, limit: usize) -> (Vec<T>, Option<String>) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|(seq, _)| encode_cursor(*seq))
    } else {
        None
    };
    (rows.into_iter().map(|(_, t)| t).collect(), next)
}

/// Checks a free-text field, adding a field error to `errors`: a required one must hold at least one
/// visible character ([`is_invisible`]: blanks, zero-width and other format characters do not count); no
/// control character but tab, newline and carriage return (a NUL, which PostgreSQL refuses in text,
/// included); at most `max` characters.
pub(crate) fn check_text(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: &str,
    max: usize,
    required: bool,
) {
    let message = if let Some(c) = value
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        format!(
            "must not hold control characters (found U+{:04X}; only tab and line breaks are allowed)",
            c as u32
        )
    } else if required && value.chars().all(is_invisible) {
        "is required and must hold at least one visible character".to_owned()
    } else if value.chars().count() > max {
        format!("must be at most {max} characters")
    } else {
        return;
    };
    errors.push(FieldError {
        field: field.into(),
        message,
    });
}

/// Whether `c` shows nothing by itself: whitespace, a control character, a format character (Unicode
/// general category Cf, as [`crate::slack::slack_text`] folds them: zero-width spaces and joiners,
/// bidirectional controls, the byte order mark, tags), a variation selector, the combining grapheme
/// joiner, a Hangul filler or the blank Braille pattern.
pub(crate) fn is_invisible(c: char) -> bool {
    use icu_properties::CodePointMapData;
    use icu_properties::props::GeneralCategory;
    c.is_whitespace()
        || c.is_control()
        || CodePointMapData::<GeneralCategory>::new().get(c) == GeneralCategory::Format
        || matches!(c as u32,
            0x034F | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F | 0x2800 | 0x3164
            | 0xFE00..=0xFE0F | 0xFFA0 | 0xE0100..=0xE01EF)
}

/// A 422 when an optional filter or parameter is longer than `max` bytes (the bound the OpenAPI
/// document declares as its maxLength), or holds a control character (no filter has one; a NUL would
/// reach the database, which PostgreSQL refuses in text).
pub(crate) fn check_len(field: &str, value: Option<&str>, max: usize) -> Result<()> {
    match value {
        Some(v) if v.len() > max => Err(Error::field(
            field,
            format!("is longer than {max} characters"),
        )),
        Some(v) if v.chars().any(char::is_control) => {
            Err(Error::field(field, "must not hold control characters"))
        }
        _ => Ok(()),
    }
}

/// The OpenAPI schema of an optional (nullable) list of strings of at most `max` characters each.
pub(crate) fn bounded_strings(max: usize) -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(max)),
        )
        .build()
}

/// Turns collected field errors into one 422, or `Ok` when there are none.
pub(crate) fn invalid_if_any(errors: Vec<FieldError>) -> Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    let detail = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::Invalid { detail, errors })
}
