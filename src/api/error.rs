//! API errors: one enum, one JSON shape `{ "error": { "code", "message" } }`,
//! the right status for each. Details of internal failures are logged here
//! and never shown to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("this token lacks the {0:?} scope")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Draining(String),
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    UnknownHandler(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    TooBusy(String),
    #[error("{0}")]
    TooManyWaits(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Draining(_) => (StatusCode::CONFLICT, "queue_draining"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_task"),
            ApiError::UnknownHandler(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_handler"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::TooBusy(_) => (StatusCode::TOO_MANY_REQUESTS, "backlog_full"),
            ApiError::TooManyWaits(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_waits"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Pool(_) => ApiError::Unavailable("redis is unavailable; retry shortly".into()),
            crate::store::StoreError::Redis(ref r)
                if r.is_io_error() || r.is_connection_dropped() || r.is_timeout() =>
            {
                ApiError::Unavailable("redis is unavailable; retry shortly".into())
            }
            crate::store::StoreError::Draining(queue) => ApiError::Draining(format!(
                "queue {queue:?} is draining: it accepts no new tasks until an operator resumes it"
            )),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The error body, for the OpenAPI document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code.
    pub code: String,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "api request failed");
        }
        let mut resp = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: code.into(),
                    message: self.to_string(),
                },
            }),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
