//! The reference portal in a real browser ([MP-Portal], [MP-Errors]): headless
//! Chromium against the real binary, with stand-in Mobile Plans objects
//! that record every call (tests/it/common/browser.rs). One test per
//! scenario; each asserts the exact callback and arguments, the SM-DP+ and
//! balance state afterwards, and saves a screenshot of each page under
//! `target/tmp/portal-screenshots/<test>/`.

use crate::common;

use crate::common::browser::Browser;
use crate::common::{iccids, Operator, Server, EID};
use hyper::Method;
use serde_json::{json, Value};
use smdpplus::euicc::lpa::Lpa;
use smdpplus::euicc::SoftEuicc;

/// One Chromium at a time: they are heavy for a 2-core machine.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CONFIG: &str = r#"
expiry_sweep_secs = 1
[mobile_plans]
brand_name = "Contoso Mobile"

[[mobile_plans.plans]]
id = "inline"
name = "2GB Monthly"
kind = "profile"
price = "10.00 EUR"
data_mb = 2048
valid_for_days = 30
profile_type = "demo"

[[mobile_plans.plans]]
id = "async"
name = "1GB Later"
kind = "profile"
data_mb = 1024
valid_for_days = 30
profile_type = "demo"
network_registration = "later"
network_registration_interval = 20

[[mobile_plans.plans]]
id = "delayed"
name = "1GB Tomorrow"
kind = "profile"
data_mb = 1024
valid_for_days = 30
profile_type = "demo"
release_delay_minutes = 60

[[mobile_plans.plans]]
id = "daypass"
name = "Day pass"
kind = "balance"
data_mb = 500
valid_for_days = 1
"#;

fn portal_url(server: &Server, query: &str) -> String {
    format!("https://localhost:{}/portal?{query}", server.web.port())
}

fn esim_launch(txid: &str) -> String {
    format!("market=US&location=US&transactionId={txid}&eid={EID}&imei=001102000315468&unknownParameter=ignored")
}

/// The metadata a completed purchase reports, both spellings set.
fn complete(plan: &str, account: &str, line: &str) -> Value {
    json!({"userAccount": account, "purchaseInstrument": account, "line": line, "lineType": line,
           "moDirectStatus": "complete", "modirectStatus": "complete", "planName": plan})
}

/// The metadata of a cancelled purchase (the docs' cancel sample).
fn cancelled(account: &str) -> Value {
    json!({"userAccount": account, "purchaseInstrument": account, "line": "bailed", "lineType": "bailed",
           "moDirectStatus": "cancelled", "modirectStatus": "cancelled", "planName": ""})
}

fn call(object: &str, method: &str, args: Value) -> Value {
    json!({"object": object, "method": method, "args": args})
}

async fn matching_id(op: &Operator, iccid: &str) -> String {
    op.show(iccid).await["profile"]["matchingId"]
        .as_str()
        .expect("matchingId")
        .to_owned()
}

/// The decision for a transactionId as the page that owns the order sees
/// it (its capability); by `iccid=`, as the operator's admin API gives it.
async fn decision(server: &Server, query: &str) -> (u16, Value) {
    let op = server.operator();
    if query.starts_with("iccid=") || query.starts_with("eid=") {
        let (s, v) = op
            .admin(Method::GET, &format!("mobileplans/orders?{query}"), None)
            .await;
        return (s, v["decision"].clone());
    }
    common::mobileplans::owner_call(
        server,
        &op,
        Method::GET,
        &format!("/mobileplans/v1/callback?{query}"),
    )
    .await
}

/// The docs' policies on every page: the support, privacy and terms
/// links, nothing wider than 800 px, no pop-up.
async fn check_policies(b: &Browser) {
    for id in ["support", "privacy", "terms"] {
        let href = b
            .exec(&format!("var a = document.getElementById('{id}'); return a ? a.getAttribute('href') : null;"))
            .await
            .expect("exec");
        assert!(href.is_string(), "no {id} link");
    }
    let width = b
        .exec("return document.documentElement.scrollWidth;")
        .await
        .expect("exec");
    assert!(
        width.as_u64().is_some_and(|w| w <= 800),
        "wider than 800 px: {width}"
    );
    assert!(
        b.calls().await.iter().all(|c| c["object"] != "window"),
        "a pop-up was attempted"
    );
}

/// Plans, then checkout, then the purchase (and the payment step of a
/// new eSIM): returns at the result page.
async fn buy(b: &mut Browser, choice: &str, account: Option<&str>) {
    b.step("plans").await;
    check_policies(b).await;
    b.screenshot("plans").await;
    b.click(&format!("input[name=choice][value=\"{choice}\"]"))
        .await;
    b.click("#continue").await;
    b.step("checkout").await;
    check_policies(b).await;
    assert!(
        !b.text("#cancel").await.is_empty(),
        "cancel on the checkout step"
    );
    b.screenshot("checkout").await;
    if let Some(a) = account {
        b.click(&format!("#account-{a}")).await;
    }
    b.click("#buy").await;
    b.wait("['payment', 'result'].indexOf(document.querySelector('main').getAttribute('data-step')) >= 0")
        .await;
    if b.exec("return document.querySelector('main').getAttribute('data-step');")
        .await
        .expect("step")
        == "payment"
    {
        // A new eSIM is held until the payment (the portal's stand-in):
        // no callback yet, the cancel button, then Pay.
        check_policies(b).await;
        assert!(b.calls().await.is_empty(), "no callback before the payment");
        assert!(!b.text("#cancel").await.is_empty(), "cancel while held");
        b.screenshot("payment").await;
        b.click("#pay").await;
    }
    b.step("result").await;
    check_policies(b).await;
    b.screenshot("result").await;
}

async fn download(server: &Server, code: &str) -> String {
    let parts: Vec<&str> = code.split('$').collect();
    assert_eq!(parts.len(), 3, "{code}");
    let lpa = Lpa::new(
        &format!("{}:{}", parts[1], server.es9.port()),
        Lpa::sgp26_roots(),
        false,
    )
    .expect("lpa");
    let mut card = SoftEuicc::sgp26_nist().expect("eUICC");
    // Boxed: the download's future is large for a test thread's stack.
    let report = Box::pin(lpa.download(&mut card, Some(parts[2]), None, &mut |_| {}))
        .await
        .expect("download with the portal's activation code");
    report.installed.iccid.as_str().to_owned()
}

async fn balance_mb(op: &Operator, iccid: &str) -> Vec<f64> {
    let (s, v) = op
        .admin(Method::GET, &format!("balances/{iccid}"), None)
        .await;
    if s == 404 {
        return vec![];
    }
    v["balance"]["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .filter(|b| b["active"] == true)
        .map(|b| b["dataRemainingInMB"].as_f64().unwrap_or(-1.0))
        .collect()
}

#[tokio::test]
async fn esim_inline_download_and_connectivity() {
    let _one = ONE_BROWSER.lock().await;
    let Some(mut b) = Browser::start("esim_inline").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    b.set_headers(&[("Accept-Language", "en-US")]).await;
    b.goto(&portal_url(&server, &esim_launch("T-inline"))).await;
    buy(&mut b, "inline", None).await;

    let (_, d) = decision(&server, "transactionId=T-inline").await;
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();
    let code = format!("1$localhost${}", matching_id(&op, &iccid).await);
    assert_eq!(
        b.calls().await,
        vec![call(
            "MobilePlansInlineOperations",
            "notifyProfileDownload",
            json!([complete("2GB Monthly", "new", "new"), code])
        )]
    );
    assert_eq!(op.state(&iccid).await, "Released");
    assert_eq!(balance_mb(&op, &iccid).await, vec![2048.0]);
    // The page registered its scripts with the app.
    let scripts = b
        .exec("return [MobilePlansInlineOperations.registrationChangedScript, MobilePlansInlineOperations.profileActivationCompleteScript];")
        .await
        .expect("exec");
    assert_eq!(
        scripts,
        json!(["onRegistrationChanged", "onActivationComplete"])
    );

    // The app's LPA downloads with the activation code the portal handed
    // out (the software eUICC here), then reports through the scripts.
    assert_eq!(download(&server, &code).await, iccid);
    let report = |f: &str, v: Value| {
        format!(
            "window[MobilePlansInlineOperations.{f}]({}); return true;",
            serde_json::to_string(&v.to_string()).unwrap_or_default()
        )
    };
    b.exec(&report(
        "registrationChangedScript",
        json!({"networkRegistrationState": "home", "iccid": iccid}),
    ))
    .await
    .expect("registration report");
    b.exec(&report(
        "profileActivationCompleteScript",
        json!({"activationResult": "success", "iccid": iccid}),
    ))
    .await
    .expect("activation report");
    assert_eq!(b.text("#registration").await, format!("home ({iccid})"));
    assert_eq!(b.text("#activation").await, format!("success ({iccid})"));
    assert_eq!(
        b.exec("return document.getElementById('cancel').hidden;")
            .await
            .expect("exec"),
        true,
        "no cancel after the download"
    );
    b.screenshot("reported").await;
    let (_, d) = decision(&server, "transactionId=T-inline").await;
    assert_eq!(d["profileState"], "Installed");
    assert!(d["callback"].is_null(), "{d}");
}

#[tokio::test]
async fn esim_asynchronous_connectivity() {
    let _one = ONE_BROWSER.lock().await;
    let Some(mut b) = Browser::start("esim_async").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    b.goto(&portal_url(&server, &esim_launch("T-async"))).await;
    buy(&mut b, "async", Some("existing")).await;
    let (_, d) = decision(&server, "transactionId=T-async").await;
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();
    let code = format!("1$localhost${}", matching_id(&op, &iccid).await);
    assert_eq!(
        b.calls().await,
        vec![call(
            "MobilePlans",
            "notifyPurchaseWithProfileDownload",
            json!([complete("1GB Later", "existing", "new"), code, 15])
        )]
    );
    assert!(b.text("#detail").await.contains("15 minutes"));
    assert_eq!(op.state(&iccid).await, "Released");
    assert_eq!(balance_mb(&op, &iccid).await, vec![1024.0]);
}

#[tokio::test]
async fn esim_delayed_download() {
    let _one = ONE_BROWSER.lock().await;
    let Some(mut b) = Browser::start("esim_delayed").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    b.goto(&portal_url(&server, &esim_launch("T-delayed")))
        .await;
    buy(&mut b, "delayed", None).await;
    let (_, d) = decision(&server, "transactionId=T-delayed").await;
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();
    let code = format!("1$localhost${}", matching_id(&op, &iccid).await);
    assert_eq!(
        b.calls().await,
        vec![call(
            "MobilePlansInlineOperations",
            "notifyProfileDownload",
            json!([complete("1GB Tomorrow", "new", "new"), code, 60])
        )]
    );
    assert_eq!(op.state(&iccid).await, "Confirmed");
    assert_eq!(d["rule"], "confirmedReleaseScheduled");
    let at = d["releaseAt"].as_str().expect("releaseAt");
    assert!(
        b.text("#detail").await.contains(&at[11..16]),
        "the release time is shown"
    );
    assert!(!b.text("#withdraw").await.is_empty());
}

#[tokio::test]
async fn esim_withdrawn_delayed_download() {
    let _one = ONE_BROWSER.lock().await;
    let Some(mut b) = Browser::start("esim_withdrawn").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    b.goto(&portal_url(&server, &esim_launch("T-withdrawn")))
        .await;
    buy(&mut b, "delayed", None).await;
    let (_, d) = decision(&server, "transactionId=T-withdrawn").await;
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();
    b.click("#withdraw").await;
    b.step("withdrawn").await;
    b.screenshot("withdrawn").await;
    let calls = b.calls().await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["method"], "notifyProfileDownload");
    // The operation context the delayed call returned goes back.
    assert_eq!(
        calls[1],
        call(
            "MobilePlansInlineOperations",
            "notifyOperationCancel",
            json!([{"Id": "op-1"}])
        )
    );
    assert_eq!(op.state(&iccid).await, "Available");
    assert!(balance_mb(&op, &iccid).await.is_empty());
    let (_, d) = decision(&server, "transactionId=T-withdrawn").await;
    assert_eq!(d["rule"], "withdrawn");
    assert!(d["releaseAt"].is_string() && d["releasedAt"].is_null());
}

#[tokio::test]
async fn warm_physical_sim_activation_adds_balance() {
    let _one = ONE_BROWSER.lock().await;
    let Some(mut b) = Browser::start("warm_psim").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    let psim = iccids(91, 1).remove(0);
    let (s, v) = op
        .admin(Method::PUT, &format!("balances/{psim}"), Some(json!({})))
        .await;
    assert_eq!(s, 200, "{v}");
    // The docs' physical SIM launch, with the trailing F the app removes.
    b.goto(&portal_url(
        &server,
        &format!("iccid={psim}&imei=001102000311608&market=us&transactionId=waoigFfX00yGH3Vb.1&location=us"),
    ))
    .await;
    buy(&mut b, &format!("daypass@{psim}"), None).await;
    assert_eq!(
        b.calls().await,
        vec![call(
            "MobilePlansInlineOperations",
            "notifyBalanceAddition",
            json!([complete("Day pass", "new", "new")])
        )]
    );
    assert_eq!(balance_mb(&op, &psim).await, vec![500.0]);
    let (_, d) = decision(&server, &format!("iccid={psim}")).await;
    assert_eq!(d["rule"], "balanceAddition");

    // A SIM that is not ours: the portal says so and cancels with invalidSIM.
    b.exec("sessionStorage.clear(); return true;")
        .await
        .expect("exec");
    let stranger = iccids(91, 2).remove(1);
    b.goto(&portal_url(
        &server,
        &format!("iccid={stranger}&transactionId=T-stranger"),
    ))
    .await;
    b.step("error").await;
    b.screenshot("unknown-sim").await;
    b.click("#cancel").await;
    b.step("cancelled").await;
    let calls = b.calls().await;
    assert_eq!(calls[0]["method"], "notifyCancelledPurchase");
    assert_eq!(calls[0]["args"][0]["moDirectStatus"], "invalidSIM");
}

#[tokio::test]
async fn top_up_of_an_installed_esim() {
    let _one = ONE_BROWSER.lock().await;
    let Some(mut b) = Browser::start("top_up").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    // An earlier purchase, installed on the eUICC.
    let (s, v) = op
        .admin(
            Method::POST,
            "mobileplans/orders",
            Some(json!({"transactionId": "T-first", "kind": "profile", "eid": EID, "profileType": "demo",
                        "planName": "2GB Monthly", "dataInMB": 2048, "validForSecs": 86400})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let code = v["decision"]["callback"]["arguments"][1]
        .as_str()
        .expect("code")
        .to_owned();
    let iccid = download(&server, &code).await;
    assert_eq!(op.state(&iccid).await, "Installed");
    b.goto(&portal_url(
        &server,
        &format!(
            "{}&iccids={iccid}F,8988247000103824828",
            esim_launch("T-topup")
        ),
    ))
    .await;
    buy(&mut b, &format!("daypass@{iccid}"), None).await;
    assert_eq!(
        b.calls().await,
        vec![call(
            "MobilePlansInlineOperations",
            "notifyBalanceAddition",
            json!([complete("Day pass", "existing", "existing"), iccid])
        )]
    );
    let mut mb = balance_mb(&op, &iccid).await;
    mb.sort_by(f64::total_cmp);
    assert_eq!(mb, vec![500.0, 2048.0]);
    assert_eq!(op.state(&iccid).await, "Installed");
}

#[tokio::test]
async fn cancel_at_each_step() {
    let _one = ONE_BROWSER.lock().await;
    let Some(mut b) = Browser::start("cancel").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();

    // On the plans step: nothing was ordered.
    b.goto(&portal_url(&server, &esim_launch("T-cancel-plans")))
        .await;
    b.step("plans").await;
    b.click("#cancel").await;
    b.step("cancelled").await;
    b.screenshot("cancelled-on-plans").await;
    assert_eq!(
        b.calls().await,
        vec![call(
            "MobilePlans",
            "notifyCancelledPurchase",
            json!([cancelled("none")])
        )]
    );
    assert_eq!(
        decision(&server, "transactionId=T-cancel-plans").await.0,
        404
    );

    // On the checkout step.
    b.exec("sessionStorage.clear(); return true;")
        .await
        .expect("exec");
    b.goto(&portal_url(&server, &esim_launch("T-cancel-checkout")))
        .await;
    b.step("plans").await;
    b.click("#continue").await;
    b.step("checkout").await;
    b.click("#cancel").await;
    b.step("cancelled").await;
    b.screenshot("cancelled-on-checkout").await;
    assert_eq!(
        b.calls().await,
        vec![call(
            "MobilePlans",
            "notifyCancelledPurchase",
            json!([cancelled("none")])
        )]
    );
    assert_eq!(
        decision(&server, "transactionId=T-cancel-checkout").await.0,
        404
    );

    // After the purchase, before the download: cancelled at the SM-DP+.
    for (txid, plan) in [
        ("T-cancel-released", "inline"),
        ("T-cancel-delayed", "delayed"),
    ] {
        b.exec("sessionStorage.clear(); return true;")
            .await
            .expect("exec");
        b.goto(&portal_url(&server, &esim_launch(txid))).await;
        buy(&mut b, plan, None).await;
        let (_, d) = decision(&server, &format!("transactionId={txid}")).await;
        let iccid = d["iccid"].as_str().expect("iccid").to_owned();
        b.click("#cancel").await;
        b.step("cancelled").await;
        b.screenshot(&format!("cancelled-after-{plan}")).await;
        let calls = b.calls().await;
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(
            calls[1],
            call(
                "MobilePlans",
                "notifyCancelledPurchase",
                json!([cancelled("new")])
            )
        );
        assert_eq!(op.state(&iccid).await, "Available");
        assert!(balance_mb(&op, &iccid).await.is_empty());
        assert_eq!(
            decision(&server, &format!("transactionId={txid}")).await.1["rule"],
            "cancelled"
        );
    }
}

#[tokio::test]
async fn launch_with_lpa_error_headers_offers_a_retry_in_french() {
    let _one = ONE_BROWSER.lock().await;
    let Some(mut b) = Browser::start("lpa_error").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    b.goto(&portal_url(&server, &esim_launch("T-first"))).await;
    buy(&mut b, "inline", None).await;
    let first = b.calls().await;
    let code = first[0]["args"][1].as_str().expect("code").to_owned();
    let (_, d) = decision(&server, "transactionId=T-first").await;
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();

    // The download failed; the app opens the portal again with the errors.
    b.set_headers(&[
        ("Accept-Language", "fr-FR,fr;q=0.9"),
        ("X-MP-LPAError-Codes", "ServerFailure,ServerNotReachable"),
        (
            "X-MP-LPAError-TimeStamps",
            "5/18/2018 11:17:23 PM,5/18/2018 11:27:33 PM",
        ),
        ("X-MP-LPAError-ICCIDs", &iccid),
    ])
    .await;
    b.goto(&portal_url(&server, &esim_launch("T-second"))).await;
    b.step("plans").await;
    b.screenshot("lpa-error").await;
    assert_eq!(
        b.exec("return document.documentElement.lang;")
            .await
            .expect("lang"),
        "fr"
    );
    assert_eq!(b.text("h1").await, "Choisissez un forfait");
    let codes = b
        .exec("return Array.prototype.map.call(document.querySelectorAll('.lpa-code'), function (e) { return e.textContent; });")
        .await
        .expect("codes");
    assert_eq!(
        codes,
        json!([
            "ServerFailure 5/18/2018 11:17:23 PM",
            "ServerNotReachable 5/18/2018 11:27:33 PM"
        ])
    );
    assert_eq!(b.text("#lpa-iccid").await, iccid);
    assert_eq!(b.text("#retry").await, "Relancer le téléchargement");
    b.click("#retry").await;
    b.step("result").await;
    b.screenshot("retried").await;
    // The same activation code again ([MP-Errors]: it can be reused).
    let calls = b.calls().await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1], first[0]);
    assert_eq!(calls[1]["args"][1], code.as_str());
    assert!(b.text("#status").await.starts_with("Merci"));
    assert_eq!(op.state(&iccid).await, "Released");
}
