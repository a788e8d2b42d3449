//! The whole HTTP surface: the API's router with the console's pages merged in. It lives above both,
//! so that `api` does not import `console` (which calls the API's handlers).

use std::sync::Arc;

use axum::Router;

use crate::app::App;

/// The complete router with its layers: the API, its documentation and probes, and the console.
pub fn router(app: Arc<App>) -> Router {
    crate::api::router(app, crate::console::router())
}
