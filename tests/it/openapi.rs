//! The OpenAPI document (`src/http/openapi.json`, served at `/openapi.json`)
//! against the code: its operations are exactly the routes the server
//! serves (`smdpplus::server::routes()`, the APIs' routing tables), and a
//! real flow over every
//! listener — ES2+ order and confirm, a real ES9+ download with its
//! notification and a cancelled session, the admin API, Mobile Plans
//! checkout, decision and portal, GetBalance and usage, operations — gets
//! responses whose status codes, content types and bodies the document
//! describes. The request bodies sent, and the handleDownloadProgressInfo
//! the operator receives, are checked against it too. Every route is
//! called at least once.

use crate::common::mobileplans::set_cookies;
use crate::common::{self, iccids, Operator, Receiver, Server, EID, EID2};
use hyper::Method;
use serde_json::{json, Value};
use smdpplus::asn1::rsp::CancelSessionReason;
use smdpplus::es9plus::dto::*;
use smdpplus::euicc::SoftEuicc;
use smdpplus::http::client::{Client, Response};
use smdpplus::http::tls::{self, Identity};
use smdpplus::ops::OPENAPI;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// The document's tag of an API.
fn tag(api: &str) -> &'static str {
    match api {
        "es2plus" => "ES2+",
        "es9plus" => "ES9+",
        "admin" => "Admin",
        "mobileplans" => "Mobile Plans",
        "portal" => "Portal",
        "getbalance" => "GetBalance",
        "ops" => "Operations",
        other => panic!("an API the document does not know: {other}"),
    }
}

/// (METHOD, path template, tag) of every route the server serves outside
/// tests: the test clock of debug builds is not part of the API.
fn routes() -> Vec<(String, String, String)> {
    smdpplus::server::routes()
        .into_iter()
        .filter(|r| r.endpoint != "testClock")
        .map(|r| {
            (
                r.method.to_string(),
                r.path.to_owned(),
                tag(r.api).to_owned(),
            )
        })
        .collect()
}

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("src/http/openapi.json is JSON")
}

/// (METHOD, path template, tag) of every operation of the document.
fn operations(doc: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                continue;
            }
            let tags = op["tags"].as_array().expect("tags");
            assert_eq!(tags.len(), 1, "{method} {path}: one tag per operation");
            out.insert((
                method.to_uppercase(),
                path.clone(),
                tags[0].as_str().expect("tag").to_owned(),
            ));
        }
    }
    out
}

#[test]
fn the_document_describes_exactly_the_routes_the_code_serves() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = operations(&doc);
    let served: BTreeSet<(String, String, String)> = routes().into_iter().collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "served but not documented: {missing:?}\ndocumented but not served: {extra:?}"
    );
    // Each path names its listener, and every schema compiles with its
    // references resolved.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let servers = item["servers"].as_array().expect("servers per path");
        assert_eq!(servers.len(), 1, "{path}");
    }
    let spec = Spec::new();
    for name in doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
    {
        spec.validator(&json!({ "$ref": format!("#/components/schemas/{name}") }));
    }
    let hook = &doc["webhooks"]["handleDownloadProgressInfo"]["post"];
    assert!(hook["responses"]["204"].is_object());
}

/// A schema check fails on a renamed field: the strict response schemas
/// refuse what the code no longer emits.
#[test]
fn strict_schemas_refuse_a_renamed_field() {
    let spec = Spec::new();
    let ok = json!({"header": {"functionExecutionStatus": {"status": "Executed-Success"}}, "iccid": "8944000000000000001"});
    spec.check_json("POST", "/gsma/rsp2/es2plus/downloadOrder", 200, &ok);
    let renamed = json!({"header": {"functionExecutionStatus": {"status": "Executed-Success"}}, "ICCID": "8944000000000000001"});
    let errors = spec.errors(
        &spec.response_schema("POST", "/gsma/rsp2/es2plus/downloadOrder", 200),
        &renamed,
    );
    assert!(!errors.is_empty(), "a renamed iccid must not validate");
    let failed_without_code = json!({"header": {"functionExecutionStatus": {"status": "Failed"}}});
    let errors = spec.errors(
        &spec.response_schema("POST", "/gsma/rsp2/es9plus/cancelSession", 200),
        &failed_without_code,
    );
    assert!(!errors.is_empty(), "Failed needs statusCodeData");
}

/// The document with a validator per schema, and the routes called so far.
struct Spec {
    doc: Value,
    covered: Mutex<BTreeSet<(String, String)>>,
}

impl Spec {
    fn new() -> Spec {
        Spec {
            doc: document(),
            covered: Mutex::new(BTreeSet::new()),
        }
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        let op = &self.doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not in the document");
        op
    }

    /// A validator for `schema`, whose `#/components/...` references
    /// resolve in the document.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = match schema {
            Value::Object(m) => m.clone(),
            other => panic!("schema is not an object: {other}"),
        };
        root.insert("components".into(), self.doc["components"].clone());
        jsonschema::draft202012::new(&Value::Object(root))
            .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
    }

    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let v = self.validator(schema);
        v.iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect()
    }

    fn validate(&self, schema: &Value, instance: &Value, what: &str) {
        let errors = self.errors(schema, instance);
        assert!(
            errors.is_empty(),
            "{what} does not match the document:\n{}\n{instance:#}",
            errors.join("\n")
        );
    }

    fn response_schema(&self, method: &str, path: &str, status: u16) -> Value {
        self.operation(method, path)["responses"][status.to_string()]["content"]["application/json"]
            ["schema"]
            .clone()
    }

    fn check_json(&self, method: &str, path: &str, status: u16, body: &Value) {
        let schema = self.response_schema(method, path, status);
        assert!(
            schema.is_object(),
            "{method} {path} {status}: no JSON response"
        );
        self.validate(&schema, body, &format!("{method} {path} {status}"));
    }

    /// Checks a request body the test sends.
    fn check_request(&self, method: &str, path: &str, ctype: &str, body: &[u8]) {
        let op = self.operation(method, path);
        let Some(content) = op["requestBody"]["content"].as_object() else {
            return;
        };
        let schema = content
            .get(ctype)
            .unwrap_or_else(|| panic!("{method} {path}: no request body of type {ctype}"));
        if ctype == "application/json" {
            let v: Value = serde_json::from_slice(body).expect("JSON request");
            self.validate(
                &schema["schema"],
                &v,
                &format!("request of {method} {path}"),
            );
        }
    }

    /// Checks a real response: its status is documented, its content type
    /// is the documented one, and a JSON body matches the schema.
    fn check_response(&self, method: &str, path: &str, r: &Response) -> Value {
        self.covered
            .lock()
            .expect("lock")
            .insert((method.to_owned(), path.to_owned()));
        let op = self.operation(method, path);
        let documented = &op["responses"][r.status.to_string()];
        let body_text = String::from_utf8_lossy(&r.body);
        assert!(
            documented.is_object(),
            "{method} {path}: status {} is not documented; body {body_text}",
            r.status
        );
        let ctype = r
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        match documented["content"].as_object() {
            None => {
                assert!(
                    r.body.is_empty(),
                    "{method} {path} {}: the document says no body",
                    r.status
                );
                Value::Null
            }
            Some(content) => {
                assert!(
                    content.contains_key(&ctype),
                    "{method} {path} {}: Content-Type {ctype:?} is not documented",
                    r.status
                );
                if ctype != "application/json" {
                    return Value::Null;
                }
                let v: Value = serde_json::from_slice(&r.body)
                    .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body_text}"));
                self.validate(
                    &content[&ctype]["schema"],
                    &v,
                    &format!("{method} {path} {}", r.status),
                );
                v
            }
        }
    }
}

/// The listeners and a client for each.
struct Apis {
    spec: Spec,
    es9: Client,
    es9_base: String,
    op: Operator,
    web: Client,
    web_base: String,
    balance: Client,
    balance_base: String,
    ops: SocketAddr,
    /// Off while a test sends a request the document calls invalid on
    /// purpose.
    check_requests: std::cell::Cell<bool>,
}

impl Apis {
    /// A JSON or form call: checks the request and the response, returns
    /// the response and its JSON (Null for other bodies).
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        listener: &str,
        method: Method,
        template: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (Response, Value) {
        let ctype = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| *v)
            .unwrap_or("application/json");
        if let (Some(b), true) = (body, self.check_requests.get()) {
            self.spec.check_request(method.as_str(), template, ctype, b);
        }
        let body = body.map(<[u8]>::to_vec).unwrap_or_default();
        let r = match listener {
            "es9" => self
                .es9
                .request(
                    method.clone(),
                    &format!("{}{path_and_query}", self.es9_base),
                    headers,
                    body,
                )
                .await
                .expect("ES9+ call"),
            "es2" => self
                .op
                .raw(method.clone(), path_and_query, headers, &body)
                .await
                .expect("ES2+ call"),
            "web" => self
                .web
                .request(
                    method.clone(),
                    &format!("{}{path_and_query}", self.web_base),
                    headers,
                    body,
                )
                .await
                .expect("operator-web call"),
            "balance" => self
                .balance
                .request(
                    method.clone(),
                    &format!("{}{path_and_query}", self.balance_base),
                    headers,
                    body,
                )
                .await
                .expect("GetBalance call"),
            other => panic!("no listener {other}"),
        };
        let v = self.spec.check_response(method.as_str(), template, &r);
        (r, v)
    }

    /// An ES2+ function call with a fresh header.
    async fn es2(&self, function: &str, mut body: Value) -> Value {
        body["header"] = json!({"functionRequesterIdentifier": self.op.requester,
            "functionCallIdentifier": format!("openapi-{}", rand_id())});
        let path = format!("/gsma/rsp2/es2plus/{function}");
        let (r, v) = self
            .call(
                "es2",
                Method::POST,
                &path,
                &path,
                &GSMA,
                Some(body.to_string().as_bytes()),
            )
            .await;
        assert_eq!(r.status, 200);
        v
    }

    /// An ES9+ function call: the raw JSON answer.
    async fn es9<T: serde::Serialize>(&self, function: &str, req: &T) -> (u16, Value) {
        let path = format!("/gsma/rsp2/es9plus/{function}");
        let body = serde_json::to_vec(req).expect("JSON");
        let mut headers = GSMA.to_vec();
        headers.push(("user-agent", "gsma-rsp-lpad"));
        let (r, v) = self
            .call("es9", Method::POST, &path, &path, &headers, Some(&body))
            .await;
        (r.status, v)
    }

    /// An admin call: (status, JSON).
    async fn admin(
        &self,
        method: Method,
        template: &str,
        path_and_query: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let (r, v) = self
            .call(
                "es2",
                method,
                &format!("/smdpplus/admin/v1/{template}"),
                &format!("/smdpplus/admin/v1/{path_and_query}"),
                &[("content-type", "application/json")],
                bytes.as_deref(),
            )
            .await;
        (r.status, v)
    }

    /// A GET on the plain-HTTP operations listener.
    async fn ops_get(&self, path: &str) -> Response {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.ops)
            .await
            .expect("connect ops");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut buf = vec![];
        s.read_to_end(&mut buf).await.expect("read");
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        let mut body = buf[split + 4..].to_vec();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut headers = hyper::HeaderMap::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                if let (Ok(k), Ok(v)) = (
                    hyper::header::HeaderName::from_bytes(k.trim().as_bytes()),
                    hyper::header::HeaderValue::from_str(v.trim()),
                ) {
                    headers.append(k, v);
                }
            }
        }
        if headers
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked")
        {
            body = dechunk(&body);
        }
        let r = Response {
            status,
            headers,
            body: body.into(),
        };
        self.spec.check_response("GET", path, &r);
        r
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 4 + n..];
    }
    out
}

const GSMA: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("x-admin-protocol", "gsma/rsp/v2.2.0"),
];

fn rand_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

fn status(v: &Value) -> &str {
    v["header"]["functionExecutionStatus"]["status"]
        .as_str()
        .unwrap_or("")
}

fn code(v: &Value) -> String {
    common::code(v)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The GetBalance caller's basic credentials (the listener's `basic` mode).
const BASIC_USER: &str = "microsoft";
const BASIC_PASSWORD: &str = "openapi-test";

#[tokio::test]
async fn real_responses_of_every_route_match_the_document() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rx = Receiver::start(&dir.path().join("receiver"), 0).await;
    let hash = hex::encode(Sha256::digest(BASIC_PASSWORD.as_bytes()));
    let config = rx.config(&format!(
        "seed_demo_profiles = 6\n[getbalance]\nauth = \"basic\"\nbasic_user = \"{BASIC_USER}\"\nbasic_password_sha256 = \"{hash}\"\n"
    ));
    let server = Server::start(&dir.path().join("data"), Some(&config));
    let pki = server.pki();
    let ci = [pki.ci_cert.as_path()];
    let operator_id =
        Identity::load(&pki.operator_client_cert, &pki.operator_client_key).expect("identity");
    let client = |id: Option<&Identity>| {
        Client::new(
            tls::client(&ci, id, false).expect("client config"),
            Duration::from_secs(30),
        )
    };
    let apis = Apis {
        spec: Spec::new(),
        es9: client(None),
        es9_base: format!("https://localhost:{}", server.es9.port()),
        op: server.operator(),
        web: client(None),
        web_base: format!("https://localhost:{}", server.web.port()),
        balance: client(Some(&operator_id)),
        balance_base: format!("https://localhost:{}", server.balance.port()),
        ops: server.ops,
        check_requests: std::cell::Cell::new(true),
    };

    // Operations, and the document as served.
    let served = apis.ops_get("/openapi.json").await;
    let served: Value = serde_json::from_slice(&served.body).expect("served JSON");
    assert_eq!(served, document(), "/openapi.json is the embedded document");
    for p in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(apis.ops_get(p).await.status, 200, "{p}");
    }

    // Admin: inventory.
    let mine = iccids(7301, 3);
    let items: Vec<Value> = mine
        .iter()
        .map(|i| json!({"iccid": i, "profileType": "gold", "package": b64(&[0x5a; 3000])}))
        .collect();
    let (s, v) = apis
        .admin(
            Method::POST,
            "profiles",
            "profiles",
            Some(json!({ "profiles": items })),
        )
        .await;
    assert_eq!((s, v["added"].as_u64()), (200, Some(3)), "{v}");
    let (s, v) = apis
        .admin(
            Method::GET,
            "profiles",
            "profiles?profileType=demo&limit=2",
            None,
        )
        .await;
    assert_eq!(s, 200);
    let demo = v["profiles"][0]["iccid"].as_str().expect("demo").to_owned();
    let (s, _) = apis
        .admin(
            Method::GET,
            "profiles/{iccid}/package",
            &format!("profiles/{demo}/package?unprotected=true"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = apis
        .admin(
            Method::GET,
            "profiles/{iccid}",
            "profiles/89440000000000000000",
            None,
        )
        .await;
    assert_eq!(s, 404, "an unknown profile: {v}");
    let (s, _) = apis
        .admin(Method::GET, "profiles", "profiles?state=Nonsense", None)
        .await;
    assert_eq!(s, 400);

    // ES2+: order, confirm, a refusal, a repeated release.
    let v = apis
        .es2("downloadOrder", json!({"iccid": mine[0], "eid": EID}))
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let v = apis
        .es2(
            "confirmOrder",
            json!({"iccid": mine[0], "releaseFlag": true}),
        )
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let v = apis.es2("releaseProfile", json!({"iccid": mine[0]})).await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let v = apis
        .es2("downloadOrder", json!({"iccid": "89440000000000000000"}))
        .await;
    assert_eq!((status(&v), code(&v).as_str()), ("Failed", "8.2.1/3.9"));
    let v = apis
        .es2(
            "cancelOrder",
            json!({"iccid": mine[2], "finalProfileStatusIndicator": "Unavailable"}),
        )
        .await;
    assert_eq!(status(&v), "Failed", "no open order: {v}");

    // ES9+: a real download of the EID-linked order.
    let mut euicc = SoftEuicc::sgp26_nist().expect("eUICC");
    let smdp = format!("localhost:{}", server.es9.port());
    let (s, v) = apis
        .es9(
            "initiateAuthentication",
            &json!({"euiccChallenge": b64(&[1; 16]), "euiccInfo1": b64(&euicc.get_euicc_info1().expect("info1")), "smdpAddress": "elsewhere.example"}),
        )
        .await;
    assert_eq!((s, code(&v).as_str()), (200, "8.8.1/3.8"), "{v}");
    let auth = authenticate(&apis, &mut euicc, &smdp, None).await;
    let pdr = euicc
        .prepare_download(
            &auth.smdp_signed2,
            &auth.smdp_signature2,
            &auth.smdp_certificate,
            &auth.profile_metadata,
            None,
            false,
        )
        .expect("PrepareDownload");
    let (s, v) = apis
        .es9(
            "getBoundProfilePackage",
            &GetBoundProfilePackageRequest {
                transaction_id: auth.transaction_id.clone(),
                prepare_download_response: pdr,
            },
        )
        .await;
    assert_eq!((s, status(&v)), (200, "Executed-Success"), "{v}");
    let bpp: GetBoundProfilePackageResponse = serde_json::from_value(v).expect("BPP");
    let (pir, installed) = euicc
        .load_bound_profile_package(&bpp.bound_profile_package)
        .expect("load BPP");
    assert!(installed.is_some(), "installed");
    let (s, _) = apis
        .es9(
            "handleNotification",
            &HandleNotificationRequest {
                pending_notification: pir,
            },
        )
        .await;
    assert_eq!(s, 204);
    apis.check_requests.set(false);
    let (s, v) = apis
        .es9("handleNotification", &json!({"pendingNotification": 7}))
        .await;
    apis.check_requests.set(true);
    assert_eq!((s, status(&v)), (200, "Failed"), "{v}");

    // ES9+: a session cancelled by the eUICC (postponed), then the order
    // cancelled by the operator.
    let v = apis.es2("downloadOrder", json!({"iccid": mine[1]})).await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let v = apis
        .es2(
            "confirmOrder",
            json!({"iccid": mine[1], "releaseFlag": false}),
        )
        .await;
    let matching_id = v["matchingId"].as_str().expect("matchingId").to_owned();
    let v = apis.es2("releaseProfile", json!({"iccid": mine[1]})).await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let (s, v) = apis
        .admin(
            Method::PUT,
            "profiles/{iccid}/expiry",
            &format!("profiles/{}/expiry", mine[1]),
            Some(json!({"expiresAt": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut other = SoftEuicc::sgp26_brainpool().expect("eUICC");
    let auth = authenticate(&apis, &mut other, &smdp, Some(&matching_id)).await;
    let (txid, csr) = other
        .cancel_session(CancelSessionReason::Postponed)
        .expect("CancelSession");
    assert_eq!(txid, auth.transaction_id);
    let (s, v) = apis
        .es9(
            "cancelSession",
            &CancelSessionRequest {
                transaction_id: txid,
                cancel_session_response: csr,
            },
        )
        .await;
    assert_eq!((s, status(&v)), (200, "Executed-Success"), "{v}");
    let v = apis
        .es2(
            "cancelOrder",
            json!({"iccid": mine[1], "matchingId": matching_id, "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");

    // The operator hears of the download (points 3 and 4) and of the
    // cancellation: each notification as the document's webhook says.
    let hook = apis.spec.doc["webhooks"]["handleDownloadProgressInfo"]["post"]["requestBody"]
        ["content"]["application/json"]["schema"]
        .clone();
    let mut points = BTreeSet::new();
    while points.len() < 3 {
        let mut n = rx
            .next(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("notifications so far: {points:?}"));
        if let Some(m) = n.as_object_mut() {
            m.remove("_path");
        }
        apis.spec
            .validate(&hook, &n, "handleDownloadProgressInfo as sent");
        points.insert(n["notificationPointId"].as_u64().expect("point"));
    }
    let (s, _) = apis.admin(Method::GET, "outbox", "outbox", None).await;
    assert_eq!(s, 200);
    let (s, v) = apis
        .admin(
            Method::GET,
            "profiles/{iccid}",
            &format!("profiles/{}", mine[0]),
            None,
        )
        .await;
    assert_eq!(
        (s, v["profile"]["state"].as_str()),
        (200, Some("Installed"))
    );

    // Mobile Plans: a purchase at once (cancelled), a delayed one
    // (withdrawn), the decision API and its refusals.
    let buy = |txid: &str, eid: &str, release_at: Option<&str>| {
        let mut b = json!({"transactionId": txid, "kind": "profile", "eid": eid, "profileType": "demo",
            "planName": "2GB Monthly", "dataInMB": 2048, "validForSecs": 86400});
        if let Some(at) = release_at {
            b["releaseAt"] = json!(at);
        }
        b
    };
    let (s, v) = apis
        .admin(
            Method::POST,
            "mobileplans/orders",
            "mobileplans/orders",
            Some(buy("oa-now", EID2, None)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let cap_now = v["capability"].as_str().expect("capability").to_owned();
    let eid3 = "89049032123451234512345678901250";
    let (s, v) = apis
        .admin(
            Method::POST,
            "mobileplans/orders",
            "mobileplans/orders",
            Some(buy("oa-later", eid3, Some("2099-01-01T00:00:00Z"))),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = apis
        .admin(
            Method::GET,
            "mobileplans/orders/{transactionId}",
            "mobileplans/orders/oa-later",
            None,
        )
        .await;
    assert_eq!(s, 200);
    let cap_later = v["capability"].as_str().expect("capability").to_owned();
    let (s, _) = apis
        .admin(
            Method::GET,
            "mobileplans/orders",
            &format!("mobileplans/orders?eid={EID2}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = apis
        .admin(
            Method::GET,
            "mobileplans/orders/{transactionId}",
            "mobileplans/orders/nobody",
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let mp = |m: Method, name: &str, q: &str, cap: &str| {
        let (name, q, cap) = (name.to_owned(), q.to_owned(), cap.to_owned());
        let apis = &apis;
        async move {
            let path = format!("/mobileplans/v1/{name}");
            let headers: Vec<(&str, &str)> = if cap.is_empty() {
                vec![]
            } else {
                vec![("x-mp-capability", cap.as_str())]
            };
            let (r, v) = apis
                .call("web", m, &path, &format!("{path}{q}"), &headers, None)
                .await;
            (r.status, v)
        }
    };
    let (s, v) = mp(Method::GET, "callback", "?transactionId=oa-now", &cap_now).await;
    assert_eq!((s, v["rule"].is_string()), (200, true), "{v}");
    let (s, _) = mp(Method::GET, "callback", "?transactionId=oa-now", "").await;
    assert_eq!(s, 403);
    let (s, _) = mp(Method::GET, "callback", "", "").await;
    assert_eq!(s, 400);
    let (s, v) = mp(Method::POST, "withdraw", "?transactionId=oa-now", &cap_now).await;
    assert_eq!(s, 409, "nothing to withdraw: {v}");
    let (s, v) = mp(Method::POST, "cancel", "?transactionId=oa-now", &cap_now).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = mp(
        Method::POST,
        "withdraw",
        "?transactionId=oa-later",
        &cap_later,
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // The portal: pages, a purchase held for payment, the operator's
    // confirmation, the portal's own confirm, a retry.
    let eid4 = "89049032123451234512345678901268";
    let page = |path: &str, q: &str, cookies: &str| {
        let (path, q, cookies) = (path.to_owned(), q.to_owned(), cookies.to_owned());
        let apis = &apis;
        async move {
            let headers: Vec<(&str, &str)> = if cookies.is_empty() {
                vec![]
            } else {
                vec![("cookie", cookies.as_str())]
            };
            let (r, _) = apis
                .call(
                    "web",
                    Method::GET,
                    &path,
                    &format!("{path}{q}"),
                    &headers,
                    None,
                )
                .await;
            r.status
        }
    };
    let launch = format!("?transactionId=oa-portal&eid={eid4}");
    assert_eq!(page("/portal", &launch, "").await, 200);
    assert_eq!(page("/portal", "?eid=1", "").await, 400);
    assert_eq!(
        page("/portal/checkout", &format!("{launch}&choice=demo-1gb"), "").await,
        200
    );
    for p in ["/portal/support", "/portal/privacy", "/portal/terms"] {
        assert_eq!(page(p, "", "").await, 200, "{p}");
    }
    let form_headers = |cookies: &str| -> Vec<(String, String)> {
        vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("cookie".into(), cookies.into()),
        ]
    };
    // The purchase as the WebView makes it: the plans page sets the CSRF
    // cookie, the form post repeats it; the answer sets the capability.
    let (r, _) = apis
        .call(
            "web",
            Method::GET,
            "/portal",
            &format!("/portal{launch}"),
            &[],
            None,
        )
        .await;
    let token = set_cookies(&r.headers)
        .into_iter()
        .find(|(n, _, _)| n == "__Host-mpcsrf")
        .map(|(_, v, _)| v)
        .expect("CSRF cookie");
    let mut cookies = format!("__Host-mpcsrf={token}");
    let buy_form = |txid: &str, csrf: &str| {
        format!("transactionId={txid}&eid={eid4}&choice=demo-1gb&account=new&csrf={csrf}")
    };
    let fh = form_headers(&cookies);
    let fh: Vec<(&str, &str)> = fh.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (r, _) = apis
        .call(
            "web",
            Method::POST,
            "/portal/purchase",
            "/portal/purchase",
            &fh,
            Some(buy_form("oa-portal2", "wrong").as_bytes()),
        )
        .await;
    assert_eq!(r.status, 403, "a wrong CSRF token");
    let (r, _) = apis
        .call(
            "web",
            Method::POST,
            "/portal/purchase",
            "/portal/purchase",
            &fh,
            Some(buy_form("oa-portal", &token).as_bytes()),
        )
        .await;
    assert_eq!(r.status, 200);
    for (n, v, _) in set_cookies(&r.headers) {
        if n.starts_with("__Host-mpcap-") {
            cookies.push_str(&format!("; {n}={v}"));
        }
    }
    assert!(cookies.contains("__Host-mpcap-"), "capability cookie");
    let (s, v) = apis
        .admin(
            Method::POST,
            "mobileplans/orders/{transactionId}/confirm",
            "mobileplans/orders/oa-portal/confirm",
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let iccid = v["decision"]["iccid"].as_str().expect("iccid").to_owned();
    let form = format!("transactionId=oa-portal&eid={eid4}&csrf={token}");
    let fh = form_headers(&cookies);
    let fh: Vec<(&str, &str)> = fh.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (r, _) = apis
        .call(
            "web",
            Method::POST,
            "/portal/confirm",
            "/portal/confirm",
            &fh,
            Some(form.as_bytes()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        page(
            "/portal/retry",
            &format!("{launch}&retryIccid={iccid}"),
            &cookies
        )
        .await,
        200
    );

    // Balances: registered and credited by the operator, read by
    // GetBalance, debited by a usage report.
    let line = &mine[0];
    let (s, v) = apis
        .admin(
            Method::PUT,
            "balances/{iccid}",
            &format!("balances/{line}"),
            Some(json!({"notSupported": false})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = apis
        .admin(
            Method::POST,
            "balances/{iccid}/credit",
            &format!("balances/{line}/credit"),
            Some(json!({"dataInMB": 1024, "validForSecs": 86400, "balanceType": "MODIRECT", "locations": ["US"], "planName": "1GB", "id": "oa-1"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = apis
        .admin(
            Method::GET,
            "balances/{iccid}",
            &format!("balances/{line}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = apis
        .admin(
            Method::GET,
            "balances/{iccid}",
            &format!("balances/{}", mine[2]),
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:{BASIC_PASSWORD}"))
    );
    let balances = "/v1/sims/{simId}/balances";
    for (q, txid, want) in [
        ("?fieldsTemplate=full", "oa-tx-1", 200),
        ("", "oa-tx-2", 200),
        ("?limit=0", "oa-tx-3", 400),
        ("", "oa-tx-2", 409),
    ] {
        let (r, _) = apis
            .call(
                "balance",
                Method::GET,
                balances,
                &format!("/v1/sims/iccid:{line}/balances{q}"),
                &[("authorization", &basic), ("x-ms-dm-transactionid", txid)],
                None,
            )
            .await;
        assert_eq!(r.status, want, "{q} {txid}");
    }
    let (r, _) = apis
        .call(
            "balance",
            Method::GET,
            balances,
            &format!("/v1/sims/iccid:{line}/balances"),
            &[("x-ms-dm-transactionid", "oa-tx-4")],
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    let usage = json!({"dataUsedInMB": 100.5, "location": "US"}).to_string();
    let (r, v) = apis
        .call(
            "balance",
            Method::POST,
            "/v1/sims/{simId}/usage",
            &format!("/v1/sims/iccid:{line}/usage"),
            &[("content-type", "application/json")],
            Some(usage.as_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{v}");

    // Every route was called.
    let covered = apis.spec.covered.lock().expect("lock").clone();
    let all: BTreeSet<(String, String)> = routes().into_iter().map(|(m, p, _)| (m, p)).collect();
    let not_called: Vec<_> = all.difference(&covered).collect();
    assert!(
        not_called.is_empty(),
        "routes not exercised: {not_called:?}"
    );
    let log = server.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "server errors:\n{}", errors.join("\n"));
}

/// InitiateAuthentication and AuthenticateClient, each answer checked.
async fn authenticate(
    apis: &Apis,
    euicc: &mut SoftEuicc,
    smdp: &str,
    matching_id: Option<&str>,
) -> AuthenticateClientResponse {
    let challenge = euicc.get_euicc_challenge();
    let (s, v) = apis
        .es9(
            "initiateAuthentication",
            &InitiateAuthenticationRequest {
                euicc_challenge: challenge.to_vec(),
                euicc_info1: euicc.get_euicc_info1().expect("euiccInfo1"),
                smdp_address: smdp.to_owned(),
            },
        )
        .await;
    assert_eq!((s, status(&v)), (200, "Executed-Success"), "{v}");
    let init: InitiateAuthenticationResponse = serde_json::from_value(v).expect("initiate");
    let asr = euicc
        .authenticate_server(
            &init.server_signed1,
            &init.server_signature1,
            &init.euicc_ci_pk_id_to_be_used,
            &init.server_certificate,
            smdp,
            matching_id,
        )
        .expect("AuthenticateServer");
    let (s, v) = apis
        .es9(
            "authenticateClient",
            &AuthenticateClientRequest {
                transaction_id: init.transaction_id,
                authenticate_server_response: asr,
            },
        )
        .await;
    assert_eq!((s, status(&v)), (200, "Executed-Success"), "{v}");
    serde_json::from_value(v).expect("authenticateClient")
}

/// Found by schemathesis: a refused GSMA call (a wrong Content-Type, no
/// X-Admin-Protocol) was answered before its body was read, and the server
/// then closed the keep-alive connection without saying so: the client's
/// next call on it failed with a TLS EOF. The body is now read first, and a
/// body too large to read is answered with `Connection: close`.
#[tokio::test]
async fn a_refused_call_leaves_the_keep_alive_connection_usable() {
    use http_body_util::{BodyExt, Full};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some("seed_demo_profiles = 0\n"));
    let cfg = tls::client(&[server.pki().ci_cert.as_path()], None, false).expect("client config");
    let tcp = tokio::net::TcpStream::connect(server.es9)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .expect("TLS");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP/1.1");
    tokio::spawn(conn);
    let path = "/gsma/rsp2/es9plus/cancelSession";
    let big =
        json!({"transactionId": "00", "cancelSessionResponse": "A".repeat(60_000)}).to_string();
    let too_big = "A".repeat(70_000);
    for (ctype, protocol, body, closes) in [
        ("text/plain", "gsma/rsp/v2.2.0", big.as_str(), false),
        ("application/json", "", big.as_str(), false),
        ("application/json", "gsma/rsp/v2.2.0", "{}", false),
        (
            "application/json",
            "gsma/rsp/v2.2.0",
            too_big.as_str(),
            true,
        ),
    ] {
        let mut req = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", ctype);
        if !protocol.is_empty() {
            req = req.header("x-admin-protocol", protocol);
        }
        let req = req
            .body(Full::new(bytes::Bytes::from(body.to_owned())))
            .expect("request");
        sender
            .ready()
            .await
            .expect("the connection is still usable");
        let r = sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("{ctype} {protocol:?} {} bytes: {e}", body.len()));
        assert_eq!(r.status(), 200);
        let close = r.headers().get("connection").is_some_and(|v| v == "close");
        assert_eq!(close, closes, "{ctype} {protocol:?} {} bytes", body.len());
        let v: Value =
            serde_json::from_slice(&r.into_body().collect().await.expect("body").to_bytes())
                .expect("JSON");
        assert_eq!(status(&v), "Failed", "{v}");
    }
}
