//! Every route the listeners serve, and the OpenAPI 3.1 document that
//! describes them (`src/http/openapi.json`, served at `GET /openapi.json` on
//! the operations listener). The drift test (`tests/openapi.rs`) checks
//! that the document's operations are exactly [`routes`], and validates
//! real responses against the document's schemas.

/// The OpenAPI 3.1 description of every HTTP API (ES2+ and ES9+ per the
/// SGP.22 §6.5 JSON binding, the admin API, Mobile Plans, the portal,
/// GetBalance and operations), with ES2+.HandleDownloadProgressInfo
/// (SGP.22 §5.3.5) as a webhook.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The API a route belongs to: one tag of the document each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    /// ES2+ (SGP.22 §5.3), on the ES2+ listener.
    Es2,
    /// ES9+ (SGP.22 §5.6), on the ES9+ listener.
    Es9,
    /// The operator admin API, on the ES2+ listener.
    Admin,
    /// The Mobile Plans callback decision API, on the operator-web listener.
    MobilePlans,
    /// The reference portal, on the operator-web listener.
    Portal,
    /// GetBalance and usage reports, on their own listener.
    GetBalance,
    /// Metrics, health and the API description, on the operations listener.
    Ops,
}

impl Api {
    /// The document's tag.
    pub fn tag(self) -> &'static str {
        match self {
            Api::Es2 => "ES2+",
            Api::Es9 => "ES9+",
            Api::Admin => "Admin",
            Api::MobilePlans => "Mobile Plans",
            Api::Portal => "Portal",
            Api::GetBalance => "GetBalance",
            Api::Ops => "Operations",
        }
    }
}

/// One operation: method and path template (`{name}` for a parameter).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// Which API.
    pub api: Api,
    /// `GET`, `POST` or `PUT`.
    pub method: &'static str,
    /// The path template.
    pub path: String,
}

/// Every route the server answers other than with its "no such endpoint"
/// refusal. ES2+ and ES9+ come from their function enums; the others are
/// listed as their handlers match them.
pub fn routes() -> Vec<Route> {
    let r = |api, method, path: &str| Route {
        api,
        method,
        path: path.to_owned(),
    };
    let mut v = Vec::new();
    for f in crate::es2plus::Function::ALL {
        v.push(r(Api::Es2, "POST", &f.path()));
    }
    for f in crate::es9plus::Function::ALL {
        v.push(r(Api::Es9, "POST", &f.path()));
    }
    for (method, tail) in [
        ("GET", "profiles"),
        ("POST", "profiles"),
        ("GET", "profiles/{iccid}"),
        ("GET", "profiles/{iccid}/package"),
        ("PUT", "profiles/{iccid}/expiry"),
        ("GET", "outbox"),
        ("POST", "mobileplans/orders"),
        ("GET", "mobileplans/orders"),
        ("GET", "mobileplans/orders/{transactionId}"),
        ("POST", "mobileplans/orders/{transactionId}/confirm"),
        ("PUT", "balances/{iccid}"),
        ("GET", "balances/{iccid}"),
        ("POST", "balances/{iccid}/credit"),
    ] {
        v.push(r(
            Api::Admin,
            method,
            &format!("{}{tail}", crate::admin::PREFIX),
        ));
    }
    for (method, name) in [
        ("GET", "callback"),
        ("POST", "cancel"),
        ("POST", "withdraw"),
    ] {
        let path = format!("{}{name}", crate::mobileplans::web::PREFIX);
        v.push(r(Api::MobilePlans, method, &path));
    }
    for (method, tail) in [
        ("GET", ""),
        ("GET", "/checkout"),
        ("POST", "/purchase"),
        ("POST", "/confirm"),
        ("GET", "/retry"),
        ("GET", "/support"),
        ("GET", "/privacy"),
        ("GET", "/terms"),
    ] {
        let path = format!("{}{tail}", crate::mobileplans::portal::PREFIX);
        v.push(r(Api::Portal, method, &path));
    }
    v.push(r(Api::GetBalance, "GET", "/v1/sims/{simId}/balances"));
    v.push(r(Api::GetBalance, "POST", "/v1/sims/{simId}/usage"));
    for path in ["/metrics", "/healthz", "/readyz", "/openapi.json"] {
        v.push(r(Api::Ops, "GET", path));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_json_and_routes_are_unique() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json");
        assert_eq!(doc["openapi"], "3.1.0");
        let all = routes();
        let set: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len(), "a route is listed twice");
    }
}
