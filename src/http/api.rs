//! One shape for every HTTP API the server offers: ES2+ and ES9+ (SGP.22
//! §6.5), the admin API, the Mobile Plans decision API and portal,
//! GetBalance and the operations endpoints.
//!
//! An API is a routing table of typed endpoints, a handler per endpoint and
//! an error type that knows its own wire form. [`call`] does the rest the
//! same way for all of them: it routes the method and path (an unknown path
//! or method is refused by the API in its own form), runs the handler, maps
//! a refusal to the wire once, logs it inside the request's span and names
//! the metric labels `api`, `endpoint`, `outcome` and `code`.

use super::{Body, ConnInfo};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// One row of an API's routing table. A path segment written `{name}`
/// matches any one non-empty segment, handed to the handler in order.
pub struct Route<E: 'static> {
    /// The method.
    pub method: Method,
    /// The path template, e.g. `/smdpplus/admin/v1/profiles/{iccid}`.
    pub path: &'static str,
    /// The endpoint it names.
    pub endpoint: E,
}

/// How a request the routing table does not name was missed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unrouted {
    /// No route has this path.
    NotFound,
    /// The path is routed, for other methods (the `Allow` header value
    /// and the endpoint's name).
    MethodNotAllowed {
        /// The methods the path takes, comma-separated.
        allow: String,
        /// The endpoint of the first route with this path.
        endpoint: &'static str,
    },
}

impl Unrouted {
    /// The `endpoint` label of the missed request.
    pub fn endpoint(&self) -> &'static str {
        match self {
            Unrouted::NotFound => "unknown",
            Unrouted::MethodNotAllowed { endpoint, .. } => endpoint,
        }
    }
}

/// A routed request, as a handler gets it.
pub struct Call<E> {
    /// The endpoint.
    pub endpoint: E,
    /// The path's `{name}` segments, in order, as sent (not decoded).
    pub params: Vec<String>,
    /// The request.
    pub req: Request<Incoming>,
    /// The connection it came on.
    pub conn: Arc<ConnInfo>,
}

/// The `outcome` label of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done as asked.
    Success,
    /// Refused: the request, the caller or the conditions of use.
    Refused,
    /// Our own failure (a bug, or a store that cannot write).
    Error,
    /// The request did not arrive within the listener's deadline.
    Timeout,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }
}

/// A refused or failed call of an API, mapped to the wire in one place.
pub trait ApiError: Send + 'static {
    /// [`Outcome::Refused`] or [`Outcome::Error`].
    fn outcome(&self) -> Outcome;
    /// The `code` label: a GSMA `subject/reason` status code (SGP.22
    /// §5.2.6) or the HTTP status.
    fn code(&self) -> String;
    /// What the log says of it (for our own failures the detail the
    /// caller does not see).
    fn detail(&self) -> &str;
    /// True when it was logged already (refusals by a limit are logged at
    /// a throttled rate, not once each).
    fn logged(&self) -> bool {
        false
    }
    /// The response.
    fn into_response(self) -> Response<Body>;
}

/// One HTTP API.
pub trait Api: Send + Sync + Sized + 'static {
    /// The `api` label, e.g. `es2plus`.
    const NAME: &'static str;
    /// The paths this API answers on a listener shared with others: the
    /// prefix itself and everything under `PREFIX/` (`""`: every path).
    const PREFIX: &'static str;
    /// The endpoints.
    type Endpoint: Copy + Send + Sync + 'static;
    /// Its refusals and failures.
    type Error: ApiError;

    /// The routing table.
    fn routes() -> &'static [Route<Self::Endpoint>];

    /// The `endpoint` label, e.g. `downloadOrder`.
    fn name(endpoint: Self::Endpoint) -> &'static str;

    /// The answer to a request the routing table does not name.
    fn unrouted(&self, miss: &Unrouted, req: &Request<Incoming>) -> Self::Error;

    /// Serves one routed request.
    fn handle(
        &self,
        call: Call<Self::Endpoint>,
    ) -> impl Future<Output = Result<Response<Body>, Self::Error>> + Send;
}

/// Finds the route of `method` and `path` in `routes`.
pub fn route<E: Copy>(
    routes: &'static [Route<E>],
    method: &Method,
    path: &str,
    name: impl Fn(E) -> &'static str,
) -> Result<(E, Vec<String>), Unrouted> {
    let mut allow: Vec<&str> = vec![];
    let mut first = None;
    for r in routes {
        let Some(params) = matches(r.path, path) else {
            continue;
        };
        if r.method == *method {
            return Ok((r.endpoint, params));
        }
        first.get_or_insert(r.endpoint);
        if !allow.contains(&r.method.as_str()) {
            allow.push(r.method.as_str());
        }
    }
    match first {
        Some(e) => Err(Unrouted::MethodNotAllowed {
            allow: allow.join(", "),
            endpoint: name(e),
        }),
        None => Err(Unrouted::NotFound),
    }
}

/// The `{name}` segments of `path` when it fits `template`.
fn matches(template: &str, path: &str) -> Option<Vec<String>> {
    let mut params = vec![];
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) if ts.starts_with('{') && ts.ends_with('}') => {
                if ps.is_empty() {
                    return None;
                }
                params.push(ps.to_owned());
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

/// What serving one request produced, with its metric labels.
pub struct Served {
    /// The response.
    pub response: Response<Body>,
    /// The API's name.
    pub api: &'static str,
    /// The endpoint's name.
    pub endpoint: &'static str,
    /// The outcome.
    pub outcome: Outcome,
    /// A GSMA status code or an HTTP status, empty on success.
    pub code: String,
}

/// Routes and serves one request of `api`.
pub async fn call<A: Api>(api: &A, req: Request<Incoming>, conn: Arc<ConnInfo>) -> Served {
    let routed = route(A::routes(), req.method(), req.uri().path(), A::name);
    let mut close = false;
    let (endpoint, result) = match routed {
        Ok((endpoint, params)) => {
            let call = Call {
                endpoint,
                params,
                req,
                conn,
            };
            (A::name(endpoint), api.handle(call).await)
        }
        Err(miss) => {
            let refusal = api.unrouted(&miss, &req);
            // The body is read before the refusal is answered, so that the
            // keep-alive connection stays usable; one too large to read
            // closes it.
            close = super::read_body(req.into_body(), UNROUTED_BODY_MAX)
                .await
                .is_err();
            (miss.endpoint(), Err(refusal))
        }
    };
    let mut served = served(A::NAME, endpoint, result);
    if close {
        served.response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    served
}

/// The most of a request body read for a request no route names.
const UNROUTED_BODY_MAX: usize = 64 * 1024;

/// The response and labels of a handled call; refusals are logged here.
fn served<E: ApiError>(
    api: &'static str,
    endpoint: &'static str,
    result: Result<Response<Body>, E>,
) -> Served {
    match result {
        Ok(response) => {
            let status = response.status();
            let (outcome, code) = if status.is_success() || status.is_redirection() {
                (Outcome::Success, String::new())
            } else if status.is_server_error() {
                (Outcome::Error, status.as_u16().to_string())
            } else {
                (Outcome::Refused, status.as_u16().to_string())
            };
            Served {
                response,
                api,
                endpoint,
                outcome,
                code,
            }
        }
        Err(e) => {
            let (outcome, code) = (e.outcome(), e.code());
            if outcome == Outcome::Error {
                tracing::error!(
                    api,
                    endpoint,
                    %code,
                    error = e.detail(),
                    "call failed internally"
                );
            } else if !e.logged() {
                tracing::info!(
                    api,
                    endpoint,
                    %code,
                    reason = e.detail(),
                    "call refused"
                );
            }
            Served {
                response: e.into_response(),
                api,
                endpoint,
                outcome,
                code,
            }
        }
    }
}

/// The future of one served request.
pub type ServedFuture = Pin<Box<dyn Future<Output = Served> + Send>>;

/// An [`Api`] behind a pointer, so that one listener can carry several.
pub trait Mounted: Send + Sync {
    /// True when `path` is this API's.
    fn claims(&self, path: &str) -> bool;
    /// Serves one request.
    fn serve(self: Arc<Self>, req: Request<Incoming>, conn: Arc<ConnInfo>) -> ServedFuture;
}

impl<A: Api> Mounted for A {
    fn claims(&self, path: &str) -> bool {
        A::PREFIX.is_empty()
            || path
                .strip_prefix(A::PREFIX)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn serve(self: Arc<Self>, req: Request<Incoming>, conn: Arc<ConnInfo>) -> ServedFuture {
        Box::pin(async move { call(&*self, req, conn).await })
    }
}

/// The APIs one listener serves. A request goes to the first whose prefix
/// claims its path, otherwise to the first of all, which refuses it in its
/// own form.
#[derive(Clone)]
pub struct Apis(Arc<[Arc<dyn Mounted>]>);

impl Apis {
    /// A listener's APIs; the first answers paths no other claims.
    pub fn new(apis: Vec<Arc<dyn Mounted>>) -> Apis {
        Apis(apis.into())
    }

    /// One API alone.
    pub fn one(api: impl Api) -> Apis {
        Apis::new(vec![Arc::new(api)])
    }

    /// Serves one request.
    pub fn serve(&self, req: Request<Incoming>, conn: Arc<ConnInfo>) -> ServedFuture {
        let path = req.uri().path();
        let api = self
            .0
            .iter()
            .find(|a| a.claims(path))
            .or_else(|| self.0.first())
            .cloned();
        match api {
            Some(api) => api.serve(req, conn),
            None => Box::pin(async {
                Served {
                    response: super::text_response(
                        StatusCode::NOT_FOUND,
                        "text/plain",
                        "not found\n",
                    ),
                    api: "none",
                    endpoint: "unknown",
                    outcome: Outcome::Refused,
                    code: "404".into(),
                }
            }),
        }
    }
}

/// One endpoint as the routing tables list it: for the OpenAPI description
/// and its drift test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// The API's name.
    pub api: &'static str,
    /// The method.
    pub method: Method,
    /// The path template.
    pub path: &'static str,
    /// The endpoint's name.
    pub endpoint: &'static str,
}

/// The routes of `A`.
pub fn routes_of<A: Api>() -> Vec<RouteInfo> {
    A::routes()
        .iter()
        .map(|r| RouteInfo {
            api: A::NAME,
            method: r.method.clone(),
            path: r.path,
            endpoint: A::name(r.endpoint),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum E {
        List,
        Add,
        One,
        Sub,
    }

    static ROUTES: &[Route<E>] = &[
        Route {
            method: Method::GET,
            path: "/v1/things",
            endpoint: E::List,
        },
        Route {
            method: Method::POST,
            path: "/v1/things",
            endpoint: E::Add,
        },
        Route {
            method: Method::GET,
            path: "/v1/things/{id}",
            endpoint: E::One,
        },
        Route {
            method: Method::PUT,
            path: "/v1/things/{id}/sub",
            endpoint: E::Sub,
        },
    ];

    fn name(e: E) -> &'static str {
        match e {
            E::List => "list",
            E::Add => "add",
            E::One => "one",
            E::Sub => "sub",
        }
    }

    #[test]
    fn routes_by_method_and_template() {
        let r = |m: Method, p: &str| route(ROUTES, &m, p, name);
        assert_eq!(r(Method::GET, "/v1/things"), Ok((E::List, vec![])));
        assert_eq!(r(Method::POST, "/v1/things"), Ok((E::Add, vec![])));
        assert_eq!(
            r(Method::GET, "/v1/things/42"),
            Ok((E::One, vec!["42".to_owned()]))
        );
        assert_eq!(
            r(Method::PUT, "/v1/things/a%2Fb/sub"),
            Ok((E::Sub, vec!["a%2Fb".to_owned()]))
        );
        assert_eq!(
            r(Method::DELETE, "/v1/things"),
            Err(Unrouted::MethodNotAllowed {
                allow: "GET, POST".into(),
                endpoint: "list"
            })
        );
        for missing in [
            "/v1/things/",
            "/v1/things/42/",
            "/v1/things//sub",
            "/v1",
            "/v1/thing",
            "",
        ] {
            assert_eq!(
                r(Method::GET, missing),
                Err(Unrouted::NotFound),
                "{missing}"
            );
        }
    }
}
