//! The sidecar's HTTP face: `GET /healthz` (200 when the store is writable,
//! 503 with the reason otherwise) and `GET /metrics` (Prometheus text).
//! Read-only: nothing here changes state.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::{self, Scraped};
use crate::service::Service;

pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(service)
}

async fn healthz(State(s): State<Arc<Service>>) -> impl IntoResponse {
    let modes = serde_json::Value::from(s.engine.modes().to_vec());
    match s.store.health().await {
        Ok(()) => (
            StatusCode::OK,
            axum_json(
                serde_json::json!({"status": "ok", "store": s.store.describe(), "layout": s.layout(), "modes": modes}),
            ),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum_json(
                serde_json::json!({"status": "unavailable", "store": s.store.describe(), "reason": e.message}),
            ),
        ),
    }
}

fn axum_json(v: serde_json::Value) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string())
}

async fn metrics(State(s): State<Arc<Service>>) -> impl IntoResponse {
    let body = s.metrics.render(Scraped {
        cache_bytes: s.cache.bytes(),
        view_cache_bytes: s.views.bytes(),
        js_runtime_rebuilds: s.engine.rebuilds(),
    });
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body)
}
