//! An async client of the rsiscsid API over its Unix domain socket: one
//! method per endpoint. Each request opens its own connection (HTTP/1.1 over
//! a local socket costs little), so the client is `Clone` and needs no pool.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::types::*;

/// What can go wrong talking to the service.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (or it does not exist).
    #[error("no service at {path} (is rsiscsid running?)")]
    NoService { path: PathBuf, source: std::io::Error },
    /// The socket exists but we may not use it.
    #[error("permission denied on {path} (the service socket is for its owner and group only)")]
    PermissionDenied { path: PathBuf },
    /// The service answered with an error body.
    #[error("{body}")]
    Api { status: u16, body: ApiErrorBody },
    /// The service answered something that is not the API.
    #[error("unexpected answer from the service (HTTP {status}): {message}")]
    Protocol { status: u16, message: String },
    #[error("HTTP error talking to the service: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(String),
}

impl ClientError {
    /// The API error body, when the service answered with one.
    pub fn api_error(&self) -> Option<&ApiErrorBody> {
        match self {
            ClientError::Api { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// Characters escaped in a query value.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn q(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// A client bound to one socket path.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self { socket: socket.into() }
    }

    /// A client for `--socket` (if given), else `$RSISCSI_SOCKET`, else the
    /// runtime-directory default ([`crate::resolve_socket_path`]).
    pub fn resolve(explicit: Option<PathBuf>) -> Self {
        Self::new(crate::resolve_socket_path(explicit))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request; returns the HTTP status and body bytes.
    async fn raw(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(StatusCode, Bytes), ClientError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::PermissionDenied { path: self.socket.clone() }
            } else {
                ClientError::NoService { path: self.socket.clone(), source: e }
            }
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder().method(method).uri(path).header(hyper::header::HOST, "rsiscsid");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.send(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol { status: status.as_u16(), message: e.to_string() })
    }

    async fn call_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(), ClientError> {
        self.send(method, path, body).await.map(|_| ())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ClientError::Request(e.to_string()))?),
            None => None,
        };
        let (status, bytes) = self.raw(method, path, body).await?;
        if status.is_success() {
            return Ok((status, bytes));
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => Err(ClientError::Api { status: status.as_u16(), body: e.error }),
            Err(_) => Err(ClientError::Protocol {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            }),
        }
    }

    const NONE: Option<&'static ()> = None;

    // ---- initiator ----

    /// `GET /v1/initiator`.
    pub async fn initiator(&self) -> Result<Initiator, ClientError> {
        self.call(Method::GET, "/v1/initiator", Self::NONE).await
    }

    /// `PUT /v1/initiator`.
    pub async fn set_initiator(&self, update: &InitiatorUpdate) -> Result<Initiator, ClientError> {
        self.call(Method::PUT, "/v1/initiator", Some(update)).await
    }

    /// `PUT /v1/initiator/chap-secret`.
    pub async fn set_chap_secret(&self, secret: &SecretString) -> Result<(), ClientError> {
        self.call_empty(Method::PUT, "/v1/initiator/chap-secret", Some(&ChapSecretRequest { secret: secret.clone() }))
            .await
    }

    // ---- portals ----

    /// `GET /v1/portals`.
    pub async fn portals(&self) -> Result<PortalList, ClientError> {
        self.call(Method::GET, "/v1/portals", Self::NONE).await
    }

    /// `POST /v1/portals` (runs SendTargets on the portal first; a portal
    /// it fails on is added only with `keep`).
    pub async fn add_portal(&self, portal: &SendTargetPortal, keep: bool) -> Result<PortalAdded, ClientError> {
        self.call(Method::POST, "/v1/portals", Some(&PortalAddRequest { portal: portal.clone(), keep })).await
    }

    /// `DELETE /v1/portals?address=A&port=P`.
    pub async fn remove_portal(&self, address: &str, port: u16) -> Result<(), ClientError> {
        let path = format!("/v1/portals?address={}&port={port}", q(address));
        self.call_empty(Method::DELETE, &path, Self::NONE).await
    }

    // ---- iSNS servers ----

    /// `GET /v1/isns-servers`.
    pub async fn isns_servers(&self) -> Result<IsnsServerList, ClientError> {
        self.call(Method::GET, "/v1/isns-servers", Self::NONE).await
    }

    /// `POST /v1/isns-servers` (registers with the server first; one that
    /// cannot be reached is added only with `keep`).
    pub async fn add_isns_server(&self, address: &str, port: u16, keep: bool) -> Result<IsnsServerAdded, ClientError> {
        let req = IsnsServerAddRequest { address: address.to_string(), port, keep };
        self.call(Method::POST, "/v1/isns-servers", Some(&req)).await
    }

    /// `DELETE /v1/isns-servers?address=A&port=P` (deregisters from it).
    pub async fn remove_isns_server(&self, address: &str, port: u16) -> Result<(), ClientError> {
        let path = format!("/v1/isns-servers?address={}&port={port}", q(address));
        self.call_empty(Method::DELETE, &path, Self::NONE).await
    }

    // ---- targets ----

    /// `POST /v1/targets/refresh`.
    pub async fn refresh_targets(&self) -> Result<RefreshResult, ClientError> {
        self.call(Method::POST, "/v1/targets/refresh", Self::NONE).await
    }

    /// `GET /v1/targets`.
    pub async fn targets(&self) -> Result<TargetList, ClientError> {
        self.call(Method::GET, "/v1/targets", Self::NONE).await
    }

    /// `POST /v1/targets/login`.
    pub async fn login(&self, req: &LoginRequest) -> Result<LoginResult, ClientError> {
        self.call(Method::POST, "/v1/targets/login", Some(req)).await
    }

    // ---- sessions ----

    /// `GET /v1/sessions`.
    pub async fn sessions(&self) -> Result<SessionList, ClientError> {
        self.call(Method::GET, "/v1/sessions", Self::NONE).await
    }

    /// `GET /v1/sessions/{session_id}`.
    pub async fn session(&self, session_id: &str) -> Result<Session, ClientError> {
        self.call(Method::GET, &format!("/v1/sessions/{}", q(session_id)), Self::NONE).await
    }

    /// `POST /v1/sessions/{session_id}/connections`.
    pub async fn add_connection(
        &self,
        session_id: &str,
        req: &AddConnectionRequest,
    ) -> Result<ConnectionAdded, ClientError> {
        self.call(Method::POST, &format!("/v1/sessions/{}/connections", q(session_id)), Some(req)).await
    }

    /// `DELETE /v1/sessions/{session_id}/connections/{connection_id}`.
    pub async fn remove_connection(&self, session_id: &str, connection_id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/sessions/{}/connections/{}", q(session_id), q(connection_id));
        self.call_empty(Method::DELETE, &path, Self::NONE).await
    }

    /// `PATCH /v1/sessions/{session_id}/connections/{connection_id}`: the
    /// connection's path settings; returns the connection as it now is.
    pub async fn set_path(
        &self,
        session_id: &str,
        connection_id: &str,
        req: &PathRequest,
    ) -> Result<Connection, ClientError> {
        let path = format!("/v1/sessions/{}/connections/{}", q(session_id), q(connection_id));
        self.call(Method::PATCH, &path, Some(req)).await
    }

    /// `POST /v1/sessions/{session_id}/logout`.
    pub async fn logout(&self, session_id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::POST, &format!("/v1/sessions/{}/logout", q(session_id)), Self::NONE).await
    }

    /// `PUT /v1/sessions/{session_id}/policy`.
    pub async fn set_policy(&self, session_id: &str, policy: &str) -> Result<(), ClientError> {
        let body = PolicyRequest { load_balance_policy: policy.to_string() };
        self.call_empty(Method::PUT, &format!("/v1/sessions/{}/policy", q(session_id)), Some(&body)).await
    }

    /// `POST /v1/sessions/{session_id}/scsi`.
    pub async fn scsi(&self, session_id: &str, req: &ScsiRequest) -> Result<ScsiResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/sessions/{}/scsi", q(session_id)), Some(req)).await
    }

    /// `POST /v1/sessions/{session_id}/exports`: serve a LUN over NBD.
    pub async fn export(&self, session_id: &str, req: &ExportRequest) -> Result<NbdExport, ClientError> {
        self.call(Method::POST, &format!("/v1/sessions/{}/exports", q(session_id)), Some(req)).await
    }

    /// `DELETE /v1/sessions/{session_id}/exports/{lun}`: stop serving it
    /// (the LUN is flushed first).
    pub async fn unexport(&self, session_id: &str, lun: u64) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &format!("/v1/sessions/{}/exports/{lun}", q(session_id)), Self::NONE).await
    }

    // ---- persistent logins ----

    /// `GET /v1/persistent-logins`.
    pub async fn persistent_logins(&self) -> Result<PersistentLoginList, ClientError> {
        self.call(Method::GET, "/v1/persistent-logins", Self::NONE).await
    }

    /// `DELETE /v1/persistent-logins?target_name=T&address=A&port=P`.
    pub async fn remove_persistent_login(
        &self,
        target_name: &str,
        address: &str,
        port: u16,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/persistent-logins?target_name={}&address={}&port={port}", q(target_name), q(address));
        self.call_empty(Method::DELETE, &path, Self::NONE).await
    }

    // ---- service ----

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/v1/health", Self::NONE).await
    }

    /// Any request, for tests and tools: the status and the raw body.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        self.raw(method, path, body).await.map(|(s, b)| (s.as_u16(), b))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(q("iqn.2024-01.lab:a b&c"), "iqn.2024-01.lab%3Aa%20b%26c");
        assert_eq!(q("::1"), "%3A%3A1");
    }

    #[tokio::test]
    async fn missing_socket_says_no_service() {
        let c = Client::new("/nonexistent/rsiscsid.sock");
        let e = c.health().await.unwrap_err();
        assert_eq!(e.to_string(), "no service at /nonexistent/rsiscsid.sock (is rsiscsid running?)");
    }
}
