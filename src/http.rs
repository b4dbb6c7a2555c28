//! The HTTP edge's error answer: a status and a JSON body `{"error": code, "message": text}` that
//! says what is wrong. A 5xx says nothing of the cause (it is logged instead).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable code for scripts and metrics: `unauthorized`, `too_large`, `bad_payload`, ...
    pub code: &'static str,
    pub message: String,
    /// For a refusal for want of a role: the role, in the body as `missing_role`.
    pub missing_role: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            missing_role: None,
        }
    }

    /// A 403 for a caller who lacks `role` for `what`.
    pub fn missing_role(role: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            missing_role: Some(role),
            ..ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The store cannot take the request; the cause goes to the log, not to the caller.
    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store cannot take writes right now; retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(role) = self.missing_role {
            body["missing_role"] = json!(role);
        }
        (self.status, Json(body)).into_response()
    }
}

/// A store that failed is the server's trouble, not the caller's: logged, and answered 503 with
/// nothing of the store's error in the body. Handlers use `?`.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        tracing::error!(error = %e, "the store failed; answering 503");
        ApiError::unavailable()
    }
}
