//! The one place where failures become API answers: an ISDSC `Status` (or a
//! Win32 code for malformed requests) and the HTTP status that goes with it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use iscsi_initiator::model::{IsdscCode, Status};
use rsiscsi_api::types::{ApiError, ApiErrorBody, ERROR_INVALID_PARAMETER};

/// A failed API request.
#[derive(Debug, Clone)]
pub struct ApiErr {
    pub http: StatusCode,
    pub body: ApiErrorBody,
}

impl ApiErr {
    /// A malformed request: Win32 `ERROR_INVALID_PARAMETER`, HTTP 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            http: StatusCode::BAD_REQUEST,
            body: ApiErrorBody::new(ERROR_INVALID_PARAMETER, "ERROR_INVALID_PARAMETER", message),
        }
    }

    /// A status with an explicit HTTP code (e.g. 400 for a malformed id that
    /// Windows reports as `ISDSC_INVALID_SESSION_ID`).
    pub fn with_http(http: StatusCode, status: Status) -> Self {
        Self { http, body: body_of(&status) }
    }
}

/// The API error body of a model status.
pub fn body_of(status: &Status) -> ApiErrorBody {
    ApiErrorBody::new(status.code.as_u32(), status.code.name(), status.message.clone())
}

/// HTTP status of each ISDSC code: unknown ids 404, conflicts 409, bad
/// arguments 400, local persistence failures 500, everything that comes
/// from the target or the network 502.
pub fn http_status(code: IsdscCode) -> StatusCode {
    use IsdscCode as C;
    match code {
        C::InvalidSessionId
        | C::InvalidConnectionId
        | C::NotFound
        | C::PortalNotFound
        | C::DeviceNotFound
        | C::DiscoveryMechanismNotFound
        | C::NoPortalSpecified => StatusCode::NOT_FOUND,
        C::CantRemoveLastConnection
        | C::CannotRemoveLeadingConnection
        | C::RemoveConnectionInProgress
        | C::TargetPortalAlreadyExists
        | C::SessionAlreadyExists
        | C::TargetAlreadyLoggedIn
        | C::SessionBusy => StatusCode::CONFLICT,
        C::InvalidParameter
        | C::MissingParameter
        | C::InvalidChapSecret
        | C::InvalidTargetChapSecret
        | C::InvalidInitiatorChapSecret
        | C::InvalidChapUserName
        | C::InvalidLogonAuthType
        | C::InvalidLoadBalancePolicy
        | C::LbPolicyNotSupported
        | C::InvalidIscsiName
        | C::InvalidPortNumber
        | C::InvalidHost
        | C::IpsecNotSupportedOnOs
        | C::RequestNotSupported
        | C::ShortChapSecret => StatusCode::BAD_REQUEST,
        C::CouldNotSavePersistentLoginData | C::CouldNotRemovePersistentLoginData | C::FailureToPersistLbPolicy => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_GATEWAY,
    }
}

impl From<Status> for ApiErr {
    fn from(status: Status) -> Self {
        Self { http: http_status(status.code), body: body_of(&status) }
    }
}

impl From<iscsi_initiator::Error> for ApiErr {
    fn from(e: iscsi_initiator::Error) -> Self {
        Status::from(e).into()
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        (self.http, Json(ApiError { error: self.body })).into_response()
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiErr>;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn unknown_session_is_404_with_its_code() {
        let e = ApiErr::from(Status::new(IsdscCode::InvalidSessionId, "no session x"));
        assert_eq!(e.http, StatusCode::NOT_FOUND);
        assert_eq!(e.body.code, 0xEFFF001C);
        assert_eq!(e.body.name, "ISDSC_INVALID_SESSION_ID");
        assert_eq!(e.body.code_hex, "0xEFFF001C");
    }

    #[test]
    fn leading_connection_is_a_conflict() {
        assert_eq!(http_status(IsdscCode::CannotRemoveLeadingConnection), StatusCode::CONFLICT);
    }

    #[test]
    fn login_failures_are_bad_gateway() {
        assert_eq!(http_status(IsdscCode::AuthenticationFailure), StatusCode::BAD_GATEWAY);
        assert_eq!(http_status(IsdscCode::ConnectionFailed), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn malformed_request_is_win32_87() {
        let e = ApiErr::bad_request("bad JSON");
        assert_eq!(e.http, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.code, 87);
        assert_eq!(e.body.name, "ERROR_INVALID_PARAMETER");
    }
}
