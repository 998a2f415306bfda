//! The 2026 WebSocket API (`/ws-api/v3`): session.logon, userDataStream.subscribe(.signature),
//! order.place / order.cancel / openOrders.cancelAll, wrapped user events.

use super::Shared;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(crate) async fn ws_api(State(_sh): State<Arc<Shared>>, _ws: WebSocketUpgrade) -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        "WebSocket API not available yet",
    )
        .into_response()
}
