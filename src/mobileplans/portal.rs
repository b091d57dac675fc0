//! The reference operator portal, served at `/portal` on the
//! operator-web listener. The Mobile Plans app opens it in a WebView with
//! GET parameters ([MP-Portal]); it sells the plans of the
//! configured catalogue, places the order in-process through the same
//! store commands as ES2+ ([`super::checkout`]), then sends the callback
//! the decision table names ([`super::decision`]) through the objects the
//! app injects.
//!
//! | step | request | |
//! |---|---|---|
//! | plans | `GET /portal?transactionId&eid&iccids&imei&location&market` (eSIM) or `?iccid=` (physical SIM) | choose a plan; the LPA error headers, if any, with a retry |
//! | checkout | `GET /portal/checkout?…&choice=` | the order and the account |
//! | result | `POST /portal/purchase` | order placed; the callback sent on load; withdraw and cancel |
//! | retry | `GET /portal/retry?…&retryIccid=` | the download callback of the line's order, again ([MP-Errors]: the activation code can be reused) |
//!
//! The plans and checkout pages set the CSRF cookie, and the checkout form
//! repeats it; the purchase response that creates an order sets its
//! capability cookie ([`super::guard`]). A reload of the result page and
//! the retry need that capability: a stranger who knows the
//! transactionId, EID and ICCID gets neither the activation code nor the
//! actions.
//!
//! Docs policies ([MP-Portal]): HTTPS only (HSTS), 800x600
//! responsive, no pop-ups, redirects or ads, support/privacy/terms links
//! and a cancel button on every step. Pages carry a per-response CSP nonce:
//! no script runs but the page's own.

use super::callback::{js_string, Callback, Metadata, MoDirectStatus};
use super::decision::Action;
use super::guard::{Confirmation, Guard, Refusal, CSRF_FIELD};
use super::text::{fill, tr, Lang, T};
use super::{Answer, Checkout, Lookup};
use crate::app::App;
use crate::config::{PlanConfig, PlanKind};
use crate::http;
use crate::http::api::{Api, Call, Route, Unrouted};
use crate::http::error::Rendered;
use crate::http::query::{percent_encode, Query};
use crate::ids::{Eid, Iccid};
use crate::store::balance::BalanceType;
use crate::store::lifecycle::State;
use crate::store::mobileplans::{Choice, OrderKind, PurchaseMetadata, Registration};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::net::IpAddr;

/// Path prefix of the portal.
pub const PREFIX: &str = "/portal";

/// The launch parameters ([MP-Portal]), carried from step to step.
/// Unknown parameters are ignored.
#[derive(Clone, Debug, Default)]
struct Launch {
    transaction_id: String,
    eid: Option<Eid>,
    iccid: Option<Iccid>,
    iccids: Vec<Iccid>,
    imei: String,
    location: String,
    market: String,
}

fn short_text(q: &Query, name: &str) -> String {
    match q.get(name) {
        Some(Ok(v)) if v.len() <= 32 && v.bytes().all(|b| b.is_ascii_graphic()) => v.to_owned(),
        _ => String::new(),
    }
}

impl Launch {
    fn parse(q: &Query) -> Result<Launch, String> {
        let transaction_id = match q.get("transactionId") {
            Some(Ok(t)) => super::transaction_id(t, "transactionId")
                .map_err(|_| "transactionId must be 1 to 64 characters".to_owned())?,
            _ => return Err("transactionId is missing".into()),
        };
        let eid = match q.get("eid") {
            Some(Ok(e)) => Some(Eid::parse(e).ok_or("eid must be 32 digits")?),
            Some(Err(())) => return Err("eid must be 32 digits".into()),
            None => None,
        };
        // A trailing F is removed by the app; Iccid::parse accepts both.
        let iccid = match q.get("iccid") {
            Some(Ok(i)) => Some(Iccid::parse(i).ok_or("iccid must be 19 or 20 digits")?),
            Some(Err(())) => return Err("iccid must be 19 or 20 digits".into()),
            None => None,
        };
        if eid.is_none() && iccid.is_none() {
            return Err("an eSIM launch has eid, a physical SIM launch iccid".into());
        }
        let iccids = match q.get("iccids") {
            Some(Ok(list)) => list
                .split(',')
                .filter_map(|i| Iccid::parse(i.trim()))
                .collect(),
            _ => vec![],
        };
        // An eSIM launch names its profiles in iccids, not iccid.
        let iccid = if eid.is_some() { None } else { iccid };
        Ok(Launch {
            transaction_id,
            eid,
            iccid,
            iccids,
            imei: short_text(q, "imei"),
            location: short_text(q, "location"),
            market: short_text(q, "market"),
        })
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![("transactionId", self.transaction_id.clone())];
        if let Some(e) = &self.eid {
            v.push(("eid", e.as_str().to_owned()));
        }
        if let Some(i) = &self.iccid {
            v.push(("iccid", i.as_str().to_owned()));
        }
        if !self.iccids.is_empty() {
            let list: Vec<&str> = self.iccids.iter().map(Iccid::as_str).collect();
            v.push(("iccids", list.join(",")));
        }
        for (k, val) in [
            ("imei", &self.imei),
            ("location", &self.location),
            ("market", &self.market),
        ] {
            if !val.is_empty() {
                v.push((k, val.clone()));
            }
        }
        v
    }

    fn hidden(&self) -> String {
        self.fields()
            .iter()
            .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
            .collect()
    }
}

/// HTML-escapes text and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A page before it is wrapped.
struct Page {
    status: StatusCode,
    step: &'static str,
    title: String,
    body: String,
    script: String,
    /// Extra response headers (`Set-Cookie`, `Retry-After`).
    headers: Vec<(&'static str, String)>,
}

const CSS: &str = "\
*{box-sizing:border-box}body{margin:0;font:16px/1.4 system-ui,sans-serif;color:#1b1b1b;background:#fff}\
header,main,footer{max-width:760px;margin:0 auto;padding:12px 16px}header{border-bottom:1px solid #ddd}\
h1{font-size:1.3em;margin:.4em 0}fieldset{border:1px solid #ccc;border-radius:6px;margin:8px 0;padding:8px 12px}\
label{display:block;padding:6px 0}.buttons{display:flex;gap:12px;flex-wrap:wrap;margin-top:12px}\
button{font-size:1em;padding:10px 18px;border-radius:6px;border:1px solid #0a5;background:#0a5;color:#fff;min-width:120px}\
button.secondary{background:#fff;color:#0a5}.alert{border:1px solid #c30;background:#fff4f0;padding:8px 12px;border-radius:6px}\
footer{border-top:1px solid #ddd;font-size:.9em}footer a{margin-right:14px}\
@media (max-width:600px){body{font-size:15px}button{flex:1 1 100%}}";

/// The script every page shares: the reports the app sends back through
/// `registrationChangedScript` and `profileActivationCompleteScript`
/// ([MP-Callbacks]: function names, each called with a JSON string),
/// and the end of a flow.
const COMMON_JS: &str = r#"
function appPresent() { return typeof MobilePlans !== "undefined"; }
function setText(id, text) { var e = document.getElementById(id); if (e) { e.textContent = text; } }
function onRegistrationChanged(json) {
  var r = {}; try { r = JSON.parse(json); } catch (e) {}
  setText("registration", r.networkRegistrationState + " (" + r.iccid + ")");
  var ok = ["home", "roaming", "partner"].indexOf(r.networkRegistrationState) >= 0;
  var e = document.getElementById("registration"); if (e) { e.setAttribute("data-ok", ok ? "true" : "false"); }
}
function onActivationComplete(json) {
  var r = {}; try { r = JSON.parse(json); } catch (e) {}
  setText("activation", r.activationResult + " (" + r.iccid + ")");
  // Downloaded: the purchase can no longer be cancelled or withdrawn.
  ["cancel", "withdraw"].forEach(function (id) { var b = document.getElementById(id); if (b) { b.hidden = true; } });
}
function registerScripts() {
  [typeof MobilePlansInlineOperations !== "undefined" ? MobilePlansInlineOperations : null,
   typeof MobilePlansInlineProfileDownload !== "undefined" ? MobilePlansInlineProfileDownload : null]
    .forEach(function (o) { if (o) {
      o.registrationChangedScript = "onRegistrationChanged";
      o.profileActivationCompleteScript = "onActivationComplete"; } });
}
function finish(state, text) {
  var m = document.querySelector("main");
  m.setAttribute("data-step", state);
  m.innerHTML = "";
  var h = document.createElement("h1"); h.id = "status"; h.textContent = text; m.appendChild(h);
}
function onClick(id, f) { var b = document.getElementById(id); if (b) { b.addEventListener("click", f); } }
"#;

fn wrap(app: &App, lang: Lang, nonce: &str, page: &Page) -> String {
    let mp = &app.config.mobile_plans;
    let brand = mp.brand_name.clone().unwrap_or_else(|| "smdpplus".into());
    let link = |configured: &Option<String>, own: &str, t: T| {
        let href = configured
            .clone()
            .unwrap_or_else(|| format!("{PREFIX}/{own}"));
        format!(
            "<a id=\"{own}\" href=\"{}\">{}</a>",
            esc(&href),
            tr(lang, t)
        )
    };
    format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><style nonce=\"{nonce}\">{CSS}</style></head><body>\
<header><strong>{brand}</strong> · {heading}</header>\
<main data-step=\"{step}\">{body}</main>\
<footer>{support}{privacy}{terms}</footer>\
<script nonce=\"{nonce}\">{COMMON_JS}{script}</script></body></html>",
        lang = lang.tag(),
        title = esc(&page.title),
        brand = esc(&brand),
        heading = tr(lang, T::Title),
        step = page.step,
        body = page.body,
        support = link(&mp.support_url, "support", T::Support),
        privacy = link(&mp.privacy_url, "privacy", T::Privacy),
        terms = link(&mp.terms_url, "terms", T::Terms),
        script = page.script,
    )
}

/// The cancel callback for a flow with no order (or a failed one):
/// `notifyCancelledPurchase` with `moDirectStatus` `status`, `line`
/// `bailed` and `planName` `""` ([MP-Callbacks] cancel sample).
fn cancel_js(status: MoDirectStatus) -> String {
    let md = PurchaseMetadata {
        user_account: Choice::None,
        purchase_instrument: Choice::None,
        line: Choice::Bailed,
        plan_name: String::new(),
    };
    Callback::CancelledPurchase {
        metadata: Metadata::ended(&md, status),
    }
    .js()
}

/// A page with a message and the cancel button (the app "must" hear
/// `notifyCancelledPurchase` when the user leaves).
fn message_page(
    lang: Lang,
    status: StatusCode,
    step: &'static str,
    heading: &str,
    detail: &str,
    cancel: MoDirectStatus,
) -> Page {
    Page {
        status,
        step,
        title: heading.to_owned(),
        body: format!(
            "<h1>{}</h1><p id=\"detail\">{}</p><div class=\"buttons\"><button type=\"button\" id=\"cancel\" class=\"secondary\">{}</button></div>",
            esc(heading),
            esc(detail),
            tr(lang, T::Cancel)
        ),
        script: format!(
            "function sendCancelled() {{ {} }}\nonClick(\"cancel\", function () {{ sendCancelled(); finish(\"cancelled\", {}); }});",
            cancel_js(cancel),
            js_string(tr(lang, T::Cancelled))
        ),
        headers: vec![],
    }
}

fn plan_line(lang: Lang, p: &PlanConfig) -> String {
    let mb = format!("{}", p.data_mb);
    let days = p.valid_for_days.to_string();
    let price = if p.price.is_empty() {
        String::new()
    } else {
        format!(" · {} {}", tr(lang, T::Price), esc(&p.price))
    };
    format!(
        "<strong>{}</strong> — {}{price}",
        esc(&p.name),
        fill(lang, T::DataValid, &[&mb, &days])
    )
}

/// The lines a launch may top up: the physical SIM, or the installed
/// eSIM profiles of this operator among `iccids`.
fn balance_lines(app: &App, launch: &Launch, operator: &str) -> Vec<Iccid> {
    match &launch.iccid {
        Some(i) => vec![i.clone()],
        None => launch
            .iccids
            .iter()
            .filter(|i| {
                app.store
                    .get(i)
                    .ok()
                    .flatten()
                    .is_some_and(|p| p.operator == operator && p.state == State::Installed)
            })
            .cloned()
            .collect(),
    }
}

fn operator(app: &App) -> String {
    app.config
        .mobile_plans
        .operator
        .clone()
        .unwrap_or_else(|| app.config.dev_operator().to_owned())
}

/// The plans a launch may buy, as (choice value, plan, line topped up).
fn offers(app: &App, launch: &Launch) -> Vec<(String, PlanConfig, Option<Iccid>)> {
    let catalogue = app.config.mobile_plans.catalogue();
    let mut out = vec![];
    if launch.eid.is_some() {
        for p in catalogue.iter().filter(|p| p.kind == PlanKind::Profile) {
            out.push((p.id.clone(), p.clone(), None));
        }
    }
    for line in balance_lines(app, launch, &operator(app)) {
        for p in catalogue.iter().filter(|p| p.kind == PlanKind::Balance) {
            out.push((format!("{}@{}", p.id, line), p.clone(), Some(line.clone())));
        }
    }
    out
}

fn lpa_errors(req: &Request<Incoming>) -> Option<(Vec<String>, Vec<String>, Option<String>)> {
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect::<Vec<_>>()
            })
    };
    let codes = h("x-mp-lpaerror-codes");
    let times = h("x-mp-lpaerror-timestamps");
    let iccid = h("x-mp-lpaerror-iccids").and_then(|v| v.into_iter().next());
    if codes.is_none() && times.is_none() && iccid.is_none() {
        return None;
    }
    Some((codes.unwrap_or_default(), times.unwrap_or_default(), iccid))
}

fn plans_page(app: &App, req: &Request<Incoming>, lang: Lang) -> Page {
    let q = Query::parse(req.uri().query());
    let launch = match launch_of(&q, lang) {
        Ok(l) => l,
        Err(page) => return page,
    };
    tracing::info!(transaction_id = %launch.transaction_id, eid = launch.eid.as_ref().map(Eid::as_str).unwrap_or("-"),
        iccid = launch.iccid.as_ref().map(Iccid::as_str).unwrap_or("-"), market = %launch.market, location = %launch.location,
        "Mobile Plans portal launch");
    if let Some(i) = &launch.iccid {
        if !app.store.sim_known(i).unwrap_or(false) {
            return message_page(
                lang,
                StatusCode::OK,
                "error",
                tr(lang, T::Error),
                tr(lang, T::UnknownSim),
                MoDirectStatus::InvalidSim,
            );
        }
    }
    let mut body = String::new();
    if let Some((codes, times, iccid)) = lpa_errors(req) {
        body.push_str(&format!(
            "<div class=\"alert\" id=\"lpa-error\"><strong>{}</strong><ul>",
            tr(lang, T::LpaError)
        ));
        for (i, code) in codes.iter().enumerate() {
            let at = times.get(i).map(String::as_str).unwrap_or("");
            body.push_str(&format!(
                "<li class=\"lpa-code\">{} <span>{}</span></li>",
                esc(code),
                esc(at)
            ));
        }
        body.push_str("</ul>");
        if let Some(i) = iccid.as_deref().and_then(Iccid::parse) {
            body.push_str(&format!(
                "<p>ICCID <span id=\"lpa-iccid\">{}</span></p>",
                esc(i.as_str())
            ));
            let retriable = app
                .store
                .mp_latest_for_iccid(&i)
                .ok()
                .flatten()
                .filter(|o| {
                    o.operator == operator(app)
                        && o.eid == launch.eid.as_ref().map(|e| e.as_str().to_owned())
                        && app.mobile_plans.allowed(req.headers(), o)
                });
            if retriable.is_some() {
                body.push_str(&format!(
                    "<form method=\"get\" action=\"{PREFIX}/retry\">{}<input type=\"hidden\" name=\"retryIccid\" value=\"{}\"><button type=\"submit\" id=\"retry\">{}</button></form>",
                    launch.hidden(),
                    esc(i.as_str()),
                    tr(lang, T::Retry)
                ));
            }
        }
        body.push_str("</div>");
    }
    let offers = offers(app, &launch);
    body.push_str(&format!("<h1>{}</h1>", tr(lang, T::ChoosePlan)));
    body.push_str(&format!(
        "<form method=\"get\" action=\"{PREFIX}/checkout\" id=\"plans\">{}",
        launch.hidden()
    ));
    if offers.is_empty() {
        body.push_str(&format!("<p>{}</p>", tr(lang, T::NoPlans)));
    }
    let mut group: Option<Option<Iccid>> = None;
    for (i, (value, plan, line)) in offers.iter().enumerate() {
        if group.as_ref() != Some(line) {
            if group.is_some() {
                body.push_str("</fieldset>");
            }
            let legend = match line {
                None => tr(lang, T::NewEsim).to_owned(),
                Some(l) if launch.iccid.is_some() => {
                    format!("{} ({})", tr(lang, T::ActivateSim), l)
                }
                Some(l) => fill(lang, T::TopUp, &[l.as_str()]),
            };
            body.push_str(&format!("<fieldset><legend>{}</legend>", esc(&legend)));
            group = Some(line.clone());
        }
        body.push_str(&format!(
            "<label><input type=\"radio\" name=\"choice\" value=\"{}\" id=\"plan-{}\"{}> {}</label>",
            esc(value),
            esc(value),
            if i == 0 { " checked" } else { "" },
            plan_line(lang, plan)
        ));
    }
    if group.is_some() {
        body.push_str("</fieldset>");
    }
    body.push_str(&format!(
        "<div class=\"buttons\"><button type=\"submit\" id=\"continue\"{}>{}</button><button type=\"button\" id=\"cancel\" class=\"secondary\">{}</button></div></form>",
        if offers.is_empty() { " disabled" } else { "" },
        tr(lang, T::Continue),
        tr(lang, T::Cancel)
    ));
    body.push_str(&format!(
        "<p id=\"no-app\" hidden>{}</p>",
        tr(lang, T::NoApp)
    ));
    let script = format!(
        "function sendCancelled() {{ {} }}\nonClick(\"cancel\", function () {{ sendCancelled(); finish(\"cancelled\", {}); }});\nif (!appPresent()) {{ document.getElementById(\"no-app\").hidden = false; }}",
        cancel_js(MoDirectStatus::Cancelled),
        js_string(tr(lang, T::Cancelled))
    );
    let (_, set_csrf) = Guard::csrf_token(req.headers());
    Page {
        status: StatusCode::OK,
        step: "plans",
        title: tr(lang, T::ChoosePlan).to_owned(),
        body,
        script,
        headers: set_csrf.map(|c| ("set-cookie", c)).into_iter().collect(),
    }
}

/// The launch parameters of a portal request, or the page refusing them.
fn launch_of(q: &Query, lang: Lang) -> Result<Launch, Page> {
    Launch::parse(q).map_err(|why| {
        message_page(
            lang,
            StatusCode::BAD_REQUEST,
            "error",
            tr(lang, T::BadLaunch),
            &why,
            MoDirectStatus::Cancelled,
        )
    })
}

/// The plan (and line) the customer chose among the offers, or the page
/// saying there is no such plan.
fn chosen(
    app: &App,
    launch: &Launch,
    q: &Query,
    lang: Lang,
) -> Result<(PlanConfig, Option<Iccid>), Page> {
    q.get("choice")
        .and_then(Result::ok)
        .and_then(|choice| {
            offers(app, launch)
                .into_iter()
                .find(|(v, _, _)| v == choice)
        })
        .map(|(_, p, l)| (p, l))
        .ok_or_else(|| {
            message_page(
                lang,
                StatusCode::BAD_REQUEST,
                "error",
                tr(lang, T::Error),
                tr(lang, T::NoPlans),
                MoDirectStatus::Cancelled,
            )
        })
}

fn checkout_page(app: &App, req: &Request<Incoming>, lang: Lang) -> Page {
    let q = Query::parse(req.uri().query());
    let launch = match launch_of(&q, lang) {
        Ok(l) => l,
        Err(page) => return page,
    };
    let (plan, line) = match chosen(app, &launch, &q, lang) {
        Ok(c) => c,
        Err(page) => return page,
    };
    let choice = match q.get("choice") {
        Some(Ok(c)) => c.to_owned(),
        _ => String::new(),
    };
    // A new eSIM line, or a physical SIM's first purchase, is most likely
    // a new customer; a top-up an existing one.
    let new_line = match &line {
        None => true,
        Some(l) => {
            launch.iccid.is_some() && app.store.mp_latest_for_iccid(l).ok().flatten().is_none()
        }
    };
    let (csrf, set_csrf) = Guard::csrf_token(req.headers());
    let body = format!(
        "<h1>{}</h1><p id=\"summary\">{}</p>{}\
<form method=\"post\" action=\"{PREFIX}/purchase\" id=\"checkout\">{}<input type=\"hidden\" name=\"choice\" value=\"{}\"><input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{csrf}\">\
<fieldset><legend>{}</legend><label><input type=\"radio\" name=\"account\" value=\"new\" id=\"account-new\"{}> {}</label>\
<label><input type=\"radio\" name=\"account\" value=\"existing\" id=\"account-existing\"{}> {}</label></fieldset>\
<div class=\"buttons\"><button type=\"submit\" id=\"buy\">{}</button><button type=\"button\" id=\"cancel\" class=\"secondary\">{}</button></div></form>",
        tr(lang, T::YourOrder),
        plan_line(lang, &plan),
        line.as_ref()
            .map(|l| format!("<p>ICCID {}</p>", esc(l.as_str())))
            .unwrap_or_default(),
        launch.hidden(),
        esc(&choice),
        tr(lang, T::Account),
        if new_line { " checked" } else { "" },
        tr(lang, T::AccountNew),
        if new_line { "" } else { " checked" },
        tr(lang, T::AccountExisting),
        tr(lang, T::Buy),
        tr(lang, T::Cancel),
    );
    Page {
        status: StatusCode::OK,
        step: "checkout",
        title: tr(lang, T::YourOrder).to_owned(),
        body,
        script: format!(
            "function sendCancelled() {{ {} }}\nonClick(\"cancel\", function () {{ sendCancelled(); finish(\"cancelled\", {}); }});",
            cancel_js(MoDirectStatus::Cancelled),
            js_string(tr(lang, T::Cancelled))
        ),
        headers: set_csrf.map(|c| ("set-cookie", c)).into_iter().collect(),
    }
}

fn hold_secs(app: &App) -> i64 {
    i64::try_from(app.config.mobile_plans.hold_secs()).unwrap_or(i64::MAX)
}

/// The checkout of a plan for a launch. A profile is held for the
/// operator's confirmation (payment), `hold_secs`.
fn checkout_for(
    app: &App,
    launch: &Launch,
    plan: &PlanConfig,
    line: Option<&Iccid>,
    account: Choice,
    now: i64,
) -> Checkout {
    let secs = i64::from(plan.valid_for_days.max(1)) * 86400;
    let balance_type = match plan.balance_type.as_deref() {
        Some("MODIRECT") => BalanceType::Modirect,
        _ => BalanceType::ModirectPayg,
    };
    let credit = Some((
        (plan.data_mb.max(0.0) * 1000.0).round() as u64,
        secs,
        balance_type,
        vec![],
    ));
    match (plan.kind, line) {
        (PlanKind::Balance, Some(line)) => {
            // A line with earlier purchases is an existing line.
            let known_line = app.store.mp_latest_for_iccid(line).ok().flatten().is_some()
                || launch.eid.is_some();
            Checkout {
                transaction_id: launch.transaction_id.clone(),
                kind: OrderKind::Balance,
                eid: launch.eid.clone(),
                iccid: Some(line.clone()),
                profile_type: None,
                registration: Registration::Now,
                release_at: None,
                hold_until: None,
                metadata: PurchaseMetadata {
                    user_account: account,
                    purchase_instrument: account,
                    line: if known_line {
                        Choice::Existing
                    } else {
                        Choice::New
                    },
                    plan_name: plan.name.clone(),
                },
                credit,
            }
        }
        _ => Checkout {
            transaction_id: launch.transaction_id.clone(),
            kind: OrderKind::Profile,
            eid: launch.eid.clone(),
            iccid: None,
            profile_type: plan.profile_type.clone(),
            registration: match plan.network_registration.as_deref() {
                Some("later") => Registration::Later {
                    interval_minutes: plan.network_registration_interval.unwrap_or(15).max(1),
                },
                _ => Registration::Now,
            },
            release_at: plan
                .release_delay_minutes
                .filter(|m| *m > 0)
                .map(|m| now + i64::from(m) * 60),
            hold_until: Some(now.saturating_add(hold_secs(app))),
            metadata: PurchaseMetadata {
                user_account: account,
                purchase_instrument: account,
                line: Choice::New,
                plan_name: plan.name.clone(),
            },
            credit,
        },
    }
}

/// The page refusing an action without the purchase's capability (or a
/// purchase without the CSRF token); counted and logged.
fn refused_page(app: &App, lang: Lang, reason: Refusal, peer: IpAddr, what: &str) -> Page {
    app.mobile_plans.refused(&app.metrics, reason, peer, what);
    message_page(
        lang,
        StatusCode::FORBIDDEN,
        "refused",
        tr(lang, T::Error),
        tr(lang, T::Forbidden),
        MoDirectStatus::Cancelled,
    )
}

/// The purchase rate limits, per client address then per EID: the page
/// refusing the purchase (429 with Retry-After), or None.
fn limited(app: &App, lang: Lang, launch: &Launch, peer: IpAddr) -> Option<Page> {
    let g = &app.mobile_plans;
    let refusal = match g.per_ip.take(&peer) {
        Err(wait) => Some((Refusal::RateLimitIp, wait)),
        Ok(()) => launch
            .eid
            .as_ref()
            .and_then(|e| g.per_eid.take(&e.as_str().to_owned()).err())
            .map(|wait| (Refusal::RateLimitEid, wait)),
    };
    let (reason, wait) = refusal?;
    g.refused(&app.metrics, reason, peer, "portalPurchase");
    let mut page = message_page(
        lang,
        StatusCode::TOO_MANY_REQUESTS,
        "limited",
        tr(lang, T::Error),
        tr(lang, T::TooMany),
        MoDirectStatus::Cancelled,
    );
    page.headers.push(("retry-after", wait.to_string()));
    Some(page)
}

/// `POST /portal/confirm`: the reference portal's stand-in payment
/// (`confirmation = "portal"`) confirms the held order; with
/// `confirmation = "operator"` it only shows where the order stands. Needs
/// the CSRF token and the order's capability.
async fn confirm(app: &App, req: Request<Incoming>, lang: Lang, peer: IpAddr) -> Page {
    let (headers, form, launch) = match posted(app, req, lang, peer, "portalConfirm").await {
        Ok(p) => p,
        Err(page) => return page,
    };
    let csrf = form.get(CSRF_FIELD).and_then(Result::ok);
    let order = match super::find(app, &Lookup::Transaction(launch.transaction_id.clone())) {
        Ok(o) => o,
        Err(e) => return failed_page(lang, &launch, &e),
    };
    if !app.mobile_plans.allowed(&headers, &order) {
        return refused_page(app, lang, Refusal::Capability, peer, "portalConfirm");
    }
    let answer = match app.config.mobile_plans.confirmation() {
        Confirmation::Portal if order.hold_pending() => {
            super::confirm(app, &order.transaction_id, super::CALLER).await
        }
        _ => super::decide(app, order),
    };
    match answer {
        Ok(a) => result_page(app, lang, &a, csrf),
        Err(e) => failed_page(lang, &launch, &e),
    }
}

/// A form the portal's page posted (purchase, confirm): its headers, its
/// fields and its launch parameters, once the body is read and the form's
/// CSRF token matches its cookie; or the page that refuses it. `what`
/// names the request in the refusal count.
async fn posted(
    app: &App,
    req: Request<Incoming>,
    lang: Lang,
    peer: IpAddr,
    what: &str,
) -> Result<(HeaderMap, Query, Launch), Page> {
    let headers = req.headers().clone();
    let body = http::read_body(req.into_body(), app.config.max_body_bytes)
        .await
        .map_err(|e| {
            message_page(
                lang,
                StatusCode::BAD_REQUEST,
                "error",
                tr(lang, T::Error),
                &e.message,
                MoDirectStatus::ServiceError,
            )
        })?;
    let form = Query::parse(std::str::from_utf8(&body).ok());
    if !Guard::csrf_ok(&headers, form.get(CSRF_FIELD).and_then(Result::ok)) {
        return Err(refused_page(app, lang, Refusal::Csrf, peer, what));
    }
    let launch = launch_of(&form, lang)?;
    Ok((headers, form, launch))
}

/// How long a purchase's capability cookie lives: the order's life.
fn capability_max_age(app: &App, order: &crate::store::mobileplans::MobilePlansOrder) -> u64 {
    let now = crate::time::now();
    let delay = order.release_at.map_or(0, |t| (t - now).max(0) as u64);
    let hold = order.hold_until.map_or(0, |t| (t - now).max(0) as u64);
    app.config
        .order_ttl
        .as_secs()
        .saturating_add(delay)
        .saturating_add(hold)
}

async fn purchase(app: &App, req: Request<Incoming>, lang: Lang, peer: IpAddr) -> Page {
    let (headers, form, launch) = match posted(app, req, lang, peer, "portalPurchase").await {
        Ok(p) => p,
        Err(page) => return page,
    };
    let csrf = form.get(CSRF_FIELD).and_then(Result::ok);
    // A reload of the result page: only for the page that made the order.
    match app.store.mp_order_by_transaction(&launch.transaction_id) {
        Ok(Some(existing)) => {
            if !app.mobile_plans.allowed(&headers, &existing) {
                return refused_page(app, lang, Refusal::Capability, peer, "portalPurchase");
            }
            return match super::decide(app, existing) {
                Ok(a) => result_page(app, lang, &a, csrf),
                Err(e) => failed_page(lang, &launch, &e),
            };
        }
        Ok(None) => {}
        Err(e) => return failed_page(lang, &launch, &e.into()),
    }
    if let Some(page) = limited(app, lang, &launch, peer) {
        return page;
    }
    let (plan, line) = match chosen(app, &launch, &form, lang) {
        Ok(c) => c,
        Err(page) => return page,
    };
    if let (PlanKind::Profile, Some(eid)) = (plan.kind, &launch.eid) {
        let cap = app.config.mobile_plans.max_open_orders_per_eid();
        match super::open_portal_orders(app, eid) {
            Ok(n) if cap > 0 && n >= cap as usize => {
                app.mobile_plans.refused(
                    &app.metrics,
                    Refusal::OpenOrdersEid,
                    peer,
                    "portalPurchase",
                );
                return message_page(
                    lang,
                    StatusCode::CONFLICT,
                    "limited",
                    tr(lang, T::Error),
                    tr(lang, T::TooManyOpen),
                    MoDirectStatus::Cancelled,
                );
            }
            Ok(_) => {}
            Err(e) => return failed_page(lang, &launch, &e),
        }
    }
    let account = match form.get("account") {
        Some(Ok("existing")) => Choice::Existing,
        _ => Choice::New,
    };
    let c = checkout_for(
        app,
        &launch,
        &plan,
        line.as_ref(),
        account,
        crate::time::now(),
    );
    let placed = match super::checkout(app, &operator(app), &c).await {
        Ok(p) => p,
        Err(e) => return failed_page(lang, &launch, &e),
    };
    let (order, created) = placed;
    // An order made meanwhile by another request is not this page's.
    if !created && !app.mobile_plans.allowed(&headers, &order) {
        return refused_page(app, lang, Refusal::Capability, peer, "portalPurchase");
    }
    let cookie = app
        .mobile_plans
        .capability_set_cookie(&order, capability_max_age(app, &order));
    match super::decide(app, order) {
        Ok(a) => {
            let mut page = result_page(app, lang, &a, csrf);
            if created {
                page.headers.push(("set-cookie", cookie));
            }
            page
        }
        Err(e) => failed_page(lang, &launch, &e),
    }
}

fn failed_page(lang: Lang, launch: &Launch, e: &super::MpError) -> Page {
    tracing::warn!(transaction_id = %launch.transaction_id, error = ?e, "portal checkout failed");
    message_page(
        lang,
        StatusCode::OK,
        "error",
        tr(lang, T::Error),
        e.body()["error"].as_str().unwrap_or_default(),
        MoDirectStatus::ServiceError,
    )
}

/// The download callback of a line's order, again, after the LPA failed:
/// only for the page holding that order's capability (the activation code
/// is what a stranger must not get).
fn retry_page(app: &App, req: &Request<Incoming>, lang: Lang, peer: IpAddr) -> Page {
    let q = Query::parse(req.uri().query());
    let launch = match launch_of(&q, lang) {
        Ok(l) => l,
        Err(page) => return page,
    };
    let order = match q.get("retryIccid") {
        Some(Ok(i)) => Iccid::parse(i).and_then(|i| super::find(app, &Lookup::Iccid(i)).ok()),
        _ => None,
    };
    let order = order.filter(|o| {
        o.operator == operator(app) && o.eid == launch.eid.as_ref().map(|e| e.as_str().to_owned())
    });
    if let Some(o) = &order {
        if !app.mobile_plans.allowed(req.headers(), o) {
            return refused_page(app, lang, Refusal::Capability, peer, "portalRetry");
        }
    }
    match order.map(|o| super::decide(app, o)) {
        Some(Ok(a)) => {
            tracing::info!(transaction_id = %launch.transaction_id, order_transaction_id = %a.order.transaction_id, "portal retry of a download");
            result_page(app, lang, &a, None)
        }
        _ => message_page(
            lang,
            StatusCode::NOT_FOUND,
            "error",
            tr(lang, T::Error),
            tr(lang, T::NoPlans),
            MoDirectStatus::Cancelled,
        ),
    }
}

/// The page after a purchase: the callback the decision names is sent on
/// load; withdraw and cancel when the decision allows them.
fn result_page(app: &App, lang: Lang, a: &Answer, csrf: Option<&str>) -> Page {
    let d = &a.decision;
    let o = &a.order;
    let txid = percent_encode(&o.transaction_id);
    let mut body = String::new();
    let mode = app.config.mobile_plans.confirmation();
    let state = match d.rule {
        super::decision::RULE_AWAITING_CONFIRMATION => "payment",
        super::decision::RULE_HOLD_LAPSED => "cancelled",
        "releasedRegistrationNow"
        | "releasedRegistrationLater"
        | "confirmedReleaseScheduled"
        | "balanceAddition" => "done",
        "cancelled" | "orderGone" => "cancelled",
        "withdrawn" => "withdrawn",
        "error" => "error",
        _ => "info",
    };
    let heading = match state {
        "done" => tr(lang, T::Thanks),
        "cancelled" => tr(lang, T::Cancelled),
        "withdrawn" => tr(lang, T::Withdrawn),
        "error" => tr(lang, T::Error),
        "payment" => tr(lang, T::Payment),
        _ => tr(lang, T::AlreadyDone),
    };
    body.push_str(&format!(
        "<h1 id=\"status\" data-state=\"{state}\">{}</h1>",
        esc(heading)
    ));
    let detail = match (&d.now, d.rule) {
        (Some(n), _) => match &n.callback {
            Callback::InlineProfileDownload { .. } => tr(lang, T::Installing).to_owned(),
            Callback::PurchaseWithProfileDownload {
                network_registration_interval,
                ..
            } => fill(
                lang,
                T::RegistersLater,
                &[&network_registration_interval.to_string()],
            ),
            Callback::DelayedProfileDownload { .. } => {
                let at = o.release_at.map(crate::time::datetime).unwrap_or_default();
                fill(lang, T::ReadyAt, &[&at.replace('T', " ").replace('Z', "")])
            }
            Callback::BalanceAddition { .. } => tr(lang, T::BalanceAdded).to_owned(),
            _ => String::new(),
        },
        (None, super::decision::RULE_AWAITING_CONFIRMATION) => {
            let until = o.hold_until.map(crate::time::datetime).unwrap_or_default();
            let until = until.replace('T', " ").replace('Z', "");
            match mode {
                Confirmation::Portal => fill(lang, T::PayBefore, &[&until]),
                Confirmation::Operator => fill(lang, T::AwaitingOperator, &[&until]),
            }
        }
        _ => String::new(),
    };
    body.push_str(&format!("<p id=\"detail\">{}</p>", esc(&detail)));
    body.push_str(&format!(
        "<p>{} <strong>{}</strong></p>",
        tr(lang, T::YourOrder),
        esc(&o.metadata.plan_name)
    ));
    if let Some(e) = &d.error {
        body.push_str(&format!("<p class=\"alert\" id=\"error\">{}</p>", esc(e)));
    }
    if o.kind == OrderKind::Profile && state != "payment" {
        body.push_str(&format!(
            "<p>{}: <span id=\"registration\">—</span></p><p>{}: <span id=\"activation\">—</span></p>",
            tr(lang, T::Network),
            tr(lang, T::Activation)
        ));
    }
    let cancel = d
        .now
        .iter()
        .chain(d.also.iter())
        .find(|x| x.action == Some(Action::Cancel));
    let withdraw = d.also.iter().find(|x| x.action == Some(Action::Withdraw));
    body.push_str("<div class=\"buttons\">");
    if let (true, Some(csrf)) = (state == "payment", csrf) {
        let (id, label) = match mode {
            Confirmation::Portal => ("pay", tr(lang, T::Pay)),
            Confirmation::Operator => ("refresh", tr(lang, T::Refresh)),
        };
        body.push_str(&format!(
            "<form method=\"post\" action=\"{PREFIX}/confirm\" id=\"confirm\"><input type=\"hidden\" name=\"transactionId\" value=\"{}\"><input type=\"hidden\" name=\"eid\" value=\"{}\"><input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\"><button type=\"submit\" id=\"{id}\">{label}</button></form>",
            esc(&o.transaction_id),
            esc(o.eid.as_deref().unwrap_or_default()),
            esc(csrf),
        ));
    }
    if withdraw.is_some() {
        body.push_str(&format!(
            "<button type=\"button\" id=\"withdraw\" class=\"secondary\">{}</button>",
            tr(lang, T::Withdraw)
        ));
    }
    if cancel.is_some() {
        body.push_str(&format!(
            "<button type=\"button\" id=\"cancel\" class=\"secondary\">{}</button>",
            tr(lang, T::CancelPurchase)
        ));
    }
    body.push_str("</div>");
    let mut script = String::from("registerScripts();\n");
    match d.now.as_ref().filter(|n| n.action.is_none()) {
        Some(n) => script.push_str(&format!(
            "function sendCallback() {{\n{}\nreturn typeof operationContext === \"undefined\" ? null : operationContext; }}\nvar operationContext = null;\ntry {{ operationContext = sendCallback(); }} catch (e) {{ setText(\"detail\", String(e)); }}\n",
            n.callback.js()
        )),
        None => script.push_str("var operationContext = null;\n"),
    }
    if let Some(c) = cancel {
        script.push_str(&format!(
            "function sendCancelled() {{ {} }}\nonClick(\"cancel\", function () {{\n  fetch(\"/mobileplans/v1/cancel?transactionId={txid}\", {{method: \"POST\"}}).then(function (r) {{\n    if (r.ok) {{ sendCancelled(); finish(\"cancelled\", {}); }} else {{ setText(\"detail\", {}); }} }});\n}});\n",
            c.callback.js(),
            js_string(tr(lang, T::Cancelled)),
            js_string(tr(lang, T::Error))
        ));
    }
    if withdraw.is_some() {
        script.push_str(&format!(
            "onClick(\"withdraw\", function () {{\n  fetch(\"/mobileplans/v1/withdraw?transactionId={txid}\", {{method: \"POST\"}}).then(function (r) {{\n    if (r.ok) {{ MobilePlansInlineOperations.notifyOperationCancel(operationContext); finish(\"withdrawn\", {}); }} else {{ setText(\"detail\", {}); }} }});\n}});\n",
            js_string(tr(lang, T::Withdrawn)),
            js_string(tr(lang, T::Error))
        ));
    }
    Page {
        status: StatusCode::OK,
        step: if state == "payment" {
            "payment"
        } else {
            "result"
        },
        title: heading.to_owned(),
        body,
        script,
        headers: vec![],
    }
}

fn info_page(lang: Lang, which: &str) -> Page {
    let (t, text) = match which {
        "support" => (T::Support, "Contact your operator's support line. This reference portal keeps no personal data."),
        "privacy" => (T::Privacy, "The portal stores the purchase (Mobile Plans transactionId, EID or ICCID, plan) to fulfil it, and nothing else."),
        _ => (T::Terms, "Reference portal: plans are for testing and take no payment."),
    };
    Page {
        status: StatusCode::OK,
        step: "info",
        title: tr(lang, t).to_owned(),
        body: format!("<h1>{}</h1><p>{}</p>", tr(lang, t), esc(text)),
        script: String::new(),
        headers: vec![],
    }
}

/// The portal's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The plans on offer.
    Plans,
    /// The checkout of one plan.
    Checkout,
    /// The purchase (form post).
    Purchase,
    /// The stand-in payment step (form post).
    Confirm,
    /// A retry after an LPA error.
    Retry,
    /// Support.
    Support,
    /// Privacy.
    Privacy,
    /// Terms.
    Terms,
}

const fn page(method: Method, path: &'static str, endpoint: Endpoint) -> Route<Endpoint> {
    Route {
        method,
        path,
        endpoint,
    }
}

static ROUTES: &[Route<Endpoint>] = &[
    page(Method::GET, "/portal", Endpoint::Plans),
    page(Method::GET, "/portal/checkout", Endpoint::Checkout),
    page(Method::POST, "/portal/purchase", Endpoint::Purchase),
    page(Method::POST, "/portal/confirm", Endpoint::Confirm),
    page(Method::GET, "/portal/retry", Endpoint::Retry),
    page(Method::GET, "/portal/support", Endpoint::Support),
    page(Method::GET, "/portal/privacy", Endpoint::Privacy),
    page(Method::GET, "/portal/terms", Endpoint::Terms),
];

/// The reference portal on the operator-web listener: HTML pages for the
/// Mobile Plans app.
pub struct Portal(pub App);

fn language(req: &Request<Incoming>) -> Lang {
    Lang::negotiate(
        req.headers()
            .get(hyper::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

impl Api for Portal {
    const NAME: &'static str = "portal";
    const PREFIX: &'static str = PREFIX;
    type Endpoint = Endpoint;
    type Error = Rendered;

    fn routes() -> &'static [Route<Endpoint>] {
        ROUTES
    }

    fn name(e: Endpoint) -> &'static str {
        match e {
            Endpoint::Plans => "portalPlans",
            Endpoint::Checkout => "portalCheckout",
            Endpoint::Purchase => "portalPurchase",
            Endpoint::Confirm => "portalConfirm",
            Endpoint::Retry => "portalRetry",
            Endpoint::Support | Endpoint::Privacy | Endpoint::Terms => "portalInfo",
        }
    }

    fn unrouted(&self, miss: &Unrouted, req: &Request<Incoming>) -> Rendered {
        let lang = language(req);
        let mut p = info_page(lang, "support");
        p.status = match miss {
            Unrouted::NotFound => StatusCode::NOT_FOUND,
            Unrouted::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        };
        Rendered(render(&self.0, lang, &p))
    }

    async fn handle(&self, call: Call<Endpoint>) -> Result<Response<http::Body>, Rendered> {
        let (app, req) = (&self.0, call.req);
        let peer = call.conn.peer.ip();
        let lang = language(&req);
        let page = match call.endpoint {
            Endpoint::Plans => plans_page(app, &req, lang),
            Endpoint::Checkout => checkout_page(app, &req, lang),
            Endpoint::Purchase => purchase(app, req, lang, peer).await,
            Endpoint::Confirm => confirm(app, req, lang, peer).await,
            Endpoint::Retry => retry_page(app, &req, lang, peer),
            Endpoint::Support => info_page(lang, "support"),
            Endpoint::Privacy => info_page(lang, "privacy"),
            Endpoint::Terms => info_page(lang, "terms"),
        };
        Ok(render(app, lang, &page))
    }
}

/// A page as the browser gets it: inside the portal's frame, with a fresh
/// script nonce and the security headers.
fn render(app: &App, lang: Lang, page: &Page) -> Response<http::Body> {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let html = wrap(app, lang, &nonce, page);
    let mut response = http::text_response(page.status, "text/html; charset=utf-8", html);
    let h = response.headers_mut();
    for (name, value) in &page.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.append(*name, v);
        }
    }
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(hyper::header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        hyper::header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        hyper::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        hyper::header::CONTENT_LANGUAGE,
        HeaderValue::from_static(lang.tag()),
    );
    response
}
