//! The HTTP routes of the API (one module per resource), the table of
//! routes the OpenAPI document is checked against, and request parsing
//! that turns every malformed input into a 400 with a clear message.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post, put};
use iscsi_initiator::model::{Status, UniqueConnectionId, UniqueSessionId};
use rsiscsi_api::types as api;

use crate::App;
use crate::error::{ApiErr, ApiResult};
use crate::registry::Live;

pub mod initiator;
pub mod isns_servers;
pub mod persistent;
pub mod portals;
pub mod sessions;
pub mod targets;

/// Every (method, path) the API serves; `tests` check it against both the
/// router and `openapi.yaml`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/health"),
    ("GET", "/v1/initiator"),
    ("PUT", "/v1/initiator"),
    ("PUT", "/v1/initiator/chap-secret"),
    ("GET", "/v1/portals"),
    ("POST", "/v1/portals"),
    ("DELETE", "/v1/portals"),
    ("GET", "/v1/isns-servers"),
    ("POST", "/v1/isns-servers"),
    ("DELETE", "/v1/isns-servers"),
    ("GET", "/v1/targets"),
    ("POST", "/v1/targets/refresh"),
    ("POST", "/v1/targets/login"),
    ("GET", "/v1/sessions"),
    ("GET", "/v1/sessions/{session_id}"),
    ("POST", "/v1/sessions/{session_id}/connections"),
    ("DELETE", "/v1/sessions/{session_id}/connections/{connection_id}"),
    ("PATCH", "/v1/sessions/{session_id}/connections/{connection_id}"),
    ("POST", "/v1/sessions/{session_id}/logout"),
    ("PUT", "/v1/sessions/{session_id}/policy"),
    ("POST", "/v1/sessions/{session_id}/scsi"),
    ("POST", "/v1/sessions/{session_id}/exports"),
    ("DELETE", "/v1/sessions/{session_id}/exports/{lun}"),
    ("GET", "/v1/persistent-logins"),
    ("DELETE", "/v1/persistent-logins"),
];

/// Largest request body: a SCSI write of 16 MiB in base64, and change.
const BODY_LIMIT: usize = 24 << 20;

/// The API router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/initiator", get(initiator::get_initiator).put(initiator::put_initiator))
        .route("/v1/initiator/chap-secret", put(initiator::put_chap_secret))
        .route("/v1/portals", get(portals::list).post(portals::add).delete(portals::remove))
        .route("/v1/isns-servers", get(isns_servers::list).post(isns_servers::add).delete(isns_servers::remove))
        .route("/v1/targets", get(targets::list))
        .route("/v1/targets/refresh", post(targets::refresh))
        .route("/v1/targets/login", post(targets::login))
        .route("/v1/sessions", get(sessions::list))
        .route("/v1/sessions/{session_id}", get(sessions::get_one))
        .route("/v1/sessions/{session_id}/connections", post(sessions::add_connection))
        .route(
            "/v1/sessions/{session_id}/connections/{connection_id}",
            axum::routing::delete(sessions::remove_connection).patch(sessions::set_path),
        )
        .route("/v1/sessions/{session_id}/logout", post(sessions::logout))
        .route("/v1/sessions/{session_id}/policy", put(sessions::set_policy))
        .route("/v1/sessions/{session_id}/scsi", post(sessions::scsi))
        .route("/v1/sessions/{session_id}/exports", post(sessions::export))
        .route("/v1/sessions/{session_id}/exports/{lun}", axum::routing::delete(sessions::unexport))
        .route("/v1/persistent-logins", get(persistent::list).delete(persistent::remove))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(access_log))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// Who is on the other end of an API connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(s: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        let c = s.io().peer_cred().ok();
        Peer { uid: c.map(|c| c.uid()), pid: c.and_then(|c| c.pid()) }
    }
}

/// One log line per request: who (peer uid and pid), what, the answer and
/// how long it took. Changes are logged at info, reads at debug. Bodies are
/// never logged (they may carry secrets).
async fn access_log(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let peer = req.extensions().get::<axum::extract::ConnectInfo<Peer>>().map(|c| c.0);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let uid = peer.and_then(|p| p.uid);
    let pid = peer.and_then(|p| p.pid);
    if method == Method::GET {
        tracing::debug!(?uid, ?pid, %method, %path, status, ms, "api request");
    } else {
        tracing::info!(?uid, ?pid, %method, %path, status, ms, "api request");
    }
    resp
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiErr {
    let mut e = ApiErr::bad_request(format!("no such endpoint: {method} {}", uri.path()));
    e.http = StatusCode::NOT_FOUND;
    e
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiErr {
    let mut e = ApiErr::bad_request(format!("{method} is not allowed on {}", uri.path()));
    e.http = StatusCode::METHOD_NOT_ALLOWED;
    e
}

async fn health(State(app): State<Arc<App>>) -> axum::Json<api::Health> {
    axum::Json(api::Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: app.started.elapsed().as_secs(),
        sessions: app.registry.all().len(),
    })
}

/// A JSON request body. Unlike `axum::Json` it does not insist on a
/// `Content-Type` header, and every failure is a 400 saying what is wrong.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiErr;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiErr> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiErr::bad_request(format!("cannot read the request body: {}", e.body_text())))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiErr::bad_request(format!("invalid JSON request body: {e}")))
    }
}

/// The body's value.
pub fn body<T>(b: JsonBody<T>) -> ApiResult<T> {
    Ok(b.0)
}

/// The query string, or a 400.
pub fn query<T>(q: Result<axum::extract::Query<T>, QueryRejection>) -> ApiResult<T> {
    match q {
        Ok(axum::extract::Query(v)) => Ok(v),
        Err(e) => Err(ApiErr::bad_request(format!("invalid query: {}", e.body_text()))),
    }
}

/// Path parameters, or a 400.
pub fn path<T>(p: Result<axum::extract::Path<T>, PathRejection>) -> ApiResult<T> {
    match p {
        Ok(axum::extract::Path(v)) => Ok(v),
        Err(e) => Err(ApiErr::bad_request(format!("invalid path: {}", e.body_text()))),
    }
}

/// A session id from the path: malformed is 400, unknown is 404, both with
/// `ISDSC_INVALID_SESSION_ID` (what Windows answers for an id it does not know).
pub fn session_of(app: &App, id: &str) -> ApiResult<Arc<Live>> {
    let sid: UniqueSessionId = id
        .parse()
        .map_err(|e: iscsi_initiator::model::IdParseError| ApiErr::with_http(StatusCode::BAD_REQUEST, e.into()))?;
    app.registry.get(sid).ok_or_else(|| {
        Status::new(iscsi_initiator::model::IsdscCode::InvalidSessionId, format!("no session {sid}")).into()
    })
}

/// A connection id from the path: malformed is 400 `ISDSC_INVALID_CONNECTION_ID`.
pub fn connection_id(id: &str) -> ApiResult<UniqueConnectionId> {
    id.parse().map_err(|e: iscsi_initiator::model::IdParseError| ApiErr::with_http(StatusCode::BAD_REQUEST, e.into()))
}

/// A load-balance policy name: unknown is 400 `ISDSC_INVALID_LOAD_BALANCE_POLICY`.
pub fn policy(name: &str) -> ApiResult<iscsi_initiator::model::LoadBalancePolicy> {
    name.parse().map_err(|e: Status| e.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

    fn doc_routes() -> BTreeSet<(String, String)> {
        let text = include_str!("../../openapi.yaml");
        let doc: serde_norway::Value = serde_norway::from_str(text).unwrap();
        let paths = doc["paths"].as_mapping().unwrap();
        let mut out = BTreeSet::new();
        for (p, item) in paths {
            let p = p.as_str().unwrap();
            for m in METHODS {
                if item.get(m).is_some() {
                    out.insert((m.to_uppercase(), p.to_string()));
                }
            }
        }
        out
    }

    fn code_routes() -> BTreeSet<(String, String)> {
        ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect()
    }

    #[test]
    fn openapi_document_lists_exactly_the_routes_served() {
        let doc = doc_routes();
        let code = code_routes();
        let missing: Vec<_> = code.difference(&doc).collect();
        let extra: Vec<_> = doc.difference(&code).collect();
        assert!(missing.is_empty() && extra.is_empty(), "not in openapi.yaml: {missing:?}; not served: {extra:?}");
    }

    fn schema(name: &str) -> serde_norway::Value {
        let doc: serde_norway::Value = serde_norway::from_str(include_str!("../../openapi.yaml")).unwrap();
        doc["components"]["schemas"][name].clone()
    }

    fn names(v: &serde_norway::Value) -> BTreeSet<String> {
        match v {
            serde_norway::Value::Mapping(m) => m.keys().map(|k| k.as_str().unwrap().to_string()).collect(),
            serde_norway::Value::Sequence(s) => s.iter().map(|k| k.as_str().unwrap().to_string()).collect(),
            _ => BTreeSet::new(),
        }
    }

    /// `value` (an API type with every optional field set) has exactly the
    /// properties schema `name` lists, and every field it always carries is
    /// listed as required.
    fn check_schema(name: &str, value: &impl serde::Serialize, always: &[&str]) {
        let s = schema(name);
        let json = serde_json::to_value(value).unwrap();
        let fields: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(fields, names(&s["properties"]), "{name}: fields against openapi.yaml properties");
        let required = names(&s["required"]);
        for f in always {
            assert!(required.contains(*f), "{name}.{f} is not required in openapi.yaml");
        }
    }

    fn export_request() -> api::ExportRequest {
        api::ExportRequest { lun: 1, nbd_socket: "/run/x.sock".into(), read_only: true, export_name: Some("n".into()) }
    }

    /// The recovery settings and counters are in openapi.yaml as the types
    /// carry them, with Windows' defaults and the bounds the service checks.
    #[test]
    fn openapi_schemas_match_the_login_session_and_persistent_types() {
        let mut req = api::LoginRequest::new("iqn.x");
        req.portal = Some(api::Portal::new("h", 3260));
        req.initiator_port = Some(1);
        req.security_flags = Some(0);
        req.login_options = Some(api::LoginOptions::default());
        req.key = Some(api::SecretString::new("k"));
        req.tunnel_outer_address = Some("t".into());
        req.load_balance_policy = Some("round-robin".into());
        req.max_request_hold_time_s = Some(30);
        req.link_down_time_s = Some(5);
        check_schema("LoginRequest", &req, &["target_name"]);
        let session = api::Session {
            session_id: "1-2".into(),
            initiator_name: "iqn.i".into(),
            target_name: "iqn.t".into(),
            isid: "000000000000".into(),
            tsih: 1,
            persistent: false,
            load_balance_policy: "round-robin".into(),
            parameters: api::SessionParameters::default(),
            connections: Vec::new(),
            devices: Vec::new(),
            counters: api::Counters::default(),
            max_request_hold_time_s: 60,
            link_down_time_s: 15,
            recovery_counters: api::RecoveryCounters::default(),
            exports: vec![api::NbdExport {
                lun: 1,
                nbd_socket: "/run/x.sock".into(),
                read_only: false,
                export_name: "iqn.t/1".into(),
                clients: 0,
            }],
        };
        let every: Vec<String> = serde_json::to_value(&session).unwrap().as_object().unwrap().keys().cloned().collect();
        check_schema("Session", &session, &every.iter().map(String::as_str).collect::<Vec<_>>());
        check_schema(
            "RecoveryCounters",
            &api::RecoveryCounters::default(),
            &["recoveries", "connections_reinstated", "sessions_reinstated", "give_ups"],
        );
        let pl = api::PersistentLogin {
            target_name: "iqn.t".into(),
            portal: api::Portal::new("h", 3260),
            initiator_port: Some(1),
            security_flags: 0x43,
            tunnel_outer_address: Some("t".into()),
            key_set: true,
            login_options: api::LoginOptions::default(),
            connections: 1,
            load_balance_policy: "round-robin".into(),
            max_request_hold_time_s: 60,
            link_down_time_s: 15,
            state: api::PersistentLoginState::LoggedIn,
            last_error: Some("x".into()),
            session_id: Some("1-2".into()),
            exports: vec![export_request()],
        };
        check_schema("PersistentLogin", &pl, &["max_request_hold_time_s", "link_down_time_s"]);
        // IPsec (issue 22): the key is write-only, a connection says under
        // which name its SA is loaded.
        let add = api::AddConnectionRequest {
            portal: api::Portal::new("h", 3260),
            initiator_port: Some(1),
            security_flags: Some(0x43),
            login_options: Some(api::LoginOptions::default()),
            key: Some(api::SecretString::new("k")),
            tunnel_outer_address: Some("t".into()),
        };
        check_schema("AddConnectionRequest", &add, &["portal"]);
        assert_eq!(schema("IpsecKey")["writeOnly"].as_bool(), Some(true));
        for s in ["LoginRequest", "AddConnectionRequest"] {
            let key = &schema(s)["properties"]["key"]["$ref"];
            assert_eq!(key.as_str(), Some("#/components/schemas/IpsecKey"), "{s}.key");
        }
        let conn = api::Connection {
            connection_id: "1-2".into(),
            cid: 0,
            initiator_address: "198.18.9.1".into(),
            initiator_port: 40000,
            target_address: "198.18.9.2".into(),
            target_port: 3260,
            state: "full-feature".into(),
            primary: true,
            weight: 1,
            header_digest: api::DigestType::None,
            data_digest: api::DigestType::None,
            max_recv_data_segment_length: 262144,
            counters: api::Counters::default(),
            ipsec: Some("rsiscsi-1-1-2".into()),
            link_rate_bytes_per_sec: Some(121_000_000),
        };
        let always: Vec<String> = serde_json::to_value(&conn)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "ipsec" && *k != "link_rate_bytes_per_sec")
            .cloned()
            .collect();
        check_schema("Connection", &conn, &always.iter().map(String::as_str).collect::<Vec<_>>());
        check_schema("ExportRequest", &export_request(), &["lun", "nbd_socket"]);
        check_schema("PathRequest", &api::PathRequest { weight: Some(3), primary: Some(false) }, &[]);
        check_schema("NbdExport", &session.exports[0], &["lun", "nbd_socket", "read_only", "export_name", "clients"]);
        for (name, default) in [
            ("MaxRequestHoldTime", api::DEFAULT_MAX_REQUEST_HOLD_TIME_S),
            ("LinkDownTime", api::DEFAULT_LINK_DOWN_TIME_S),
        ] {
            let s = schema(name);
            assert_eq!(s["default"].as_u64(), Some(u64::from(default)), "{name}");
            assert_eq!(s["minimum"].as_u64(), Some(u64::from(*api::RECOVERY_TIME_RANGE_S.start())), "{name}");
            assert_eq!(s["maximum"].as_u64(), Some(u64::from(*api::RECOVERY_TIME_RANGE_S.end())), "{name}");
        }
    }

    /// The iSNS server types are in openapi.yaml as they serialize.
    #[test]
    fn openapi_schemas_match_the_isns_server_types() {
        let server = api::IsnsServer {
            address: "127.0.0.1".into(),
            port: 3205,
            state: api::IsnsServerState::Unreachable,
            last_error: Some("refused".into()),
            targets: 2,
            registration_period_s: Some(900),
            scn_portal: Some("127.0.0.1:40000".into()),
        };
        check_schema("IsnsServer", &server, &["address", "port", "state", "targets"]);
        let states = schema("IsnsServer")["properties"]["state"]["enum"].clone();
        for st in
            [api::IsnsServerState::Connecting, api::IsnsServerState::Registered, api::IsnsServerState::Unreachable]
        {
            let name = serde_json::to_value(st).unwrap();
            assert!(names(&states).contains(name.as_str().unwrap()), "{name}");
        }
        let req = api::IsnsServerAddRequest { address: "h".into(), port: 3205, keep: true };
        check_schema("IsnsServerAddRequest", &req, &["address"]);
        let s = schema("IsnsServerAddRequest");
        assert_eq!(s["properties"]["port"]["default"].as_u64(), Some(u64::from(api::ISNS_DEFAULT_PORT)));
    }

    fn app() -> Arc<App> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("rsiscsid-router-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        App::new(crate::store::Store::open(&d).unwrap())
    }

    async fn call(r: &Router, m: &str, p: &str) -> (StatusCode, serde_json::Value) {
        let req = axum::http::Request::builder().method(m).uri(p).body(Body::empty()).unwrap();
        let resp = r.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// Each listed route reaches a handler (not the 404/405 fallbacks), and
    /// every other method on those paths is 405 with an error body.
    #[tokio::test]
    async fn router_serves_every_listed_route_and_no_other_method() {
        let r = router(app());
        let concrete = |p: &str| p.replace("{session_id}", "not-an-id").replace("{connection_id}", "1-2");
        for (m, p) in ROUTES {
            let (status, body) = call(&r, m, &concrete(p)).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {p}");
            let msg = body["error"]["message"].as_str().unwrap_or("");
            assert!(!msg.starts_with("no such endpoint"), "{m} {p}: {body}");
        }
        let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
        for p in paths {
            for m in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
                if ROUTES.contains(&(m, p)) {
                    continue;
                }
                let (status, body) = call(&r, m, &concrete(p)).await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {p}");
                assert_eq!(body["error"]["code"], 87, "{m} {p}: {body}");
            }
        }
        let (status, body) = call(&r, "GET", "/v1/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["name"], "ERROR_INVALID_PARAMETER");
    }

    async fn post(r: &Router, p: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
        let req = axum::http::Request::builder()
            .method("POST")
            .uri(p)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = r.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// IPsec wishes are checked before anything connects or is stored,
    /// each mistake with its status; a persistent login that gets as far
    /// as charon (unreachable here) is stored with its key in the secrets
    /// file only; the key is in no answer; discovery portals refuse IPsec.
    #[tokio::test]
    async fn ipsec_requests_are_checked_and_the_key_is_kept_secret() {
        let d = std::env::temp_dir().join(format!("rsiscsid-ipsec-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let charon: Arc<dyn iscsi_initiator::ipsec::IpsecProvider> =
            Arc::new(iscsi_initiator::ipsec::StrongSwan::new("/nonexistent/charon.vici"));
        let app = App::build(
            crate::store::Store::open(&d).unwrap(),
            crate::recovery::RecoveryTimes::WINDOWS,
            None,
            Some(charon),
        );
        let r = router(app.clone());
        let login = |flags: u64, key: Option<&str>| {
            let mut b = serde_json::json!({
                "target_name": "iqn.2026-12.x:y",
                "portal": {"address": "127.0.0.1", "port": 9},
                "security_flags": flags,
                "tunnel_outer_address": "127.0.0.2",
                "persistent": true,
            });
            if let Some(k) = key {
                b["key"] = k.into();
            }
            b
        };
        for (flags, key, name) in [
            (0x43, None, "ISDSC_TARGET_PRESHAREDKEY_UNAVAILABLE"),
            (0x4b, Some("api-psk-secret"), "ISDSC_REQUEST_NOT_SUPPORTED"),
            (0x63, Some("api-psk-secret"), "ISDSC_INVALID_PARAMETER"),
        ] {
            let (status, body) = post(&r, "/v1/targets/login", login(flags, key)).await;
            assert!(status.is_client_error() || status.is_server_error(), "{flags:#x}: {status}");
            assert_eq!(body["error"]["name"], name, "{flags:#x}: {body}");
            assert!(app.store.state().persistent_logins.is_empty(), "{flags:#x}: stored");
        }
        let (_, body) = post(&r, "/v1/targets/login", login(0x43, Some("api-psk-secret"))).await;
        assert_eq!(body["error"]["name"], "ISDSC_FAILED_TO_CONFIGURE_IPSEC", "{body}");
        assert!(!body.to_string().contains("api-psk-secret"), "{body}");
        let stored = app.store.state().persistent_logins;
        assert_eq!(stored.len(), 1);
        assert_eq!((stored[0].security_flags, stored[0].tunnel_outer_address.as_deref()), (0x43, Some("127.0.0.2")));
        let state = std::fs::read_to_string(d.join(crate::store::STATE_FILE)).unwrap();
        let secrets = std::fs::read_to_string(d.join(crate::store::SECRETS_FILE)).unwrap();
        assert!(!state.contains("api-psk-secret") && secrets.contains("api-psk-secret"));
        let spec = crate::logins::spec_of(&stored[0], &app.store.secrets(), app.recovery_defaults).unwrap();
        assert_eq!(spec.key.as_ref().map(|k| k.expose().to_vec()), Some(b"api-psk-secret".to_vec()));
        assert!(!format!("{spec:?}").contains("api-psk-secret"));
        let (_, list) = call(&r, "GET", "/v1/persistent-logins").await;
        assert_eq!(list["persistent_logins"][0]["key_set"], true, "{list}");
        assert!(!list.to_string().contains("api-psk-secret"), "{list}");
        let p = serde_json::json!({"address": "127.0.0.1", "port": 9, "security_flags": 0x43});
        let (_, body) = post(&r, "/v1/portals", p).await;
        assert_eq!(body["error"]["name"], "ISDSC_REQUEST_NOT_SUPPORTED", "{body}");
        app.logins.stop_all();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn malformed_session_id_is_400_invalid_session_id() {
        let r = router(app());
        let (status, body) = call(&r, "GET", "/v1/sessions/xyz").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["name"], "ISDSC_INVALID_SESSION_ID");
        let (status, body) = call(&r, "GET", "/v1/sessions/1-2").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code_hex"], "0xEFFF001C");
    }
}
