//! A small HTTP client for tests that talk to a real `serve` process on loopback.

use serde_json::Value;

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<axum::body::Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// The prefix of an `Err` from [`http`] when the connection was refused: the server never accepted the
/// request. Any other error (a reset, an unanswered request) means an accepted request was lost.
pub const REFUSED: &str = "connection refused";

fn refused(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return e.is_connect() && io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    false
}

/// One JSON request; `Err` when it failed (starting with [`REFUSED`] when the connection was refused).
pub async fn http(
    c: &Client,
    method: &str,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    use http_body_util::BodyExt;
    let mut b = axum::http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let req = b
        .body(http_body_util::Full::new(axum::body::Bytes::from(
            body.map(|v| v.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let resp = c.request(req).await.map_err(|e| {
        if refused(&e) {
            format!("{REFUSED}: {e}")
        } else {
            format!("{e:?}")
        }
    })?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}
