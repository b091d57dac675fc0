//! The SM-DP+ address when none is configured: derived from the ES9+
//! listener, with its port when that is not 443, so that activation codes,
//! confirmOrder's smdpAddress and the notification address in the profile
//! metadata send LPAs to the port the server listens on. The dev TLS
//! certificate still names the host alone, and a real download with the
//! software eUICC works with the address exactly as handed out.

use crate::common::{status, Server};
use serde_json::json;

#[tokio::test]
async fn derived_address_carries_the_es9_port_and_downloads_work_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_derived_address(dir.path(), None);
    let port = server.es9.port();
    assert_ne!(port, 443);
    let expected = format!("localhost:{port}");

    let op = server.operator();
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "demo"}))
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let iccid = v["iccid"].as_str().expect("iccid").to_owned();
    let (_, v) = op
        .call("confirmOrder", json!({"iccid": iccid, "releaseFlag": true}))
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let address = v["smdpAddress"].as_str().expect("smdpAddress").to_owned();
    assert_eq!(address, expected);
    let matching_id = v["matchingId"].as_str().expect("matchingId").to_owned();
    // The activation code an operator builds from it (SGP.22 §4.1).
    let code = format!("1${address}${matching_id}");
    let parts: Vec<&str> = code.split('$').collect();

    // The dev TLS certificate names the host, never host:port.
    let certs = smdpplus::pki::load_certs(&server.pki().tls_cert).expect("tls cert");
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).expect("parse");
    let san = cert
        .subject_alternative_name()
        .expect("san")
        .expect("has a SAN");
    let dns: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    assert!(dns.iter().any(|d| d == "localhost"), "{dns:?}");
    assert!(dns.iter().all(|d| !d.contains(':')), "{dns:?}");

    // The software eUICC downloads with the activation code's address as is.
    let lpa =
        smdpplus::euicc::lpa::Lpa::new(parts[1], smdpplus::euicc::lpa::Lpa::sgp26_roots(), false)
            .expect("lpa");
    let mut card = smdpplus::euicc::SoftEuicc::sgp26_nist().expect("eUICC");
    let report = lpa
        .download(&mut card, Some(parts[2]), None, &mut |_| {})
        .await
        .expect("download");
    assert_eq!(report.installed.iccid.as_str(), iccid);
    // The metadata's notification address (every operation, to this
    // SM-DP+) carries the port too.
    let meta = &report.installed.metadata;
    assert!(
        meta.windows(expected.len())
            .any(|w| w == expected.as_bytes()),
        "notification address without the port in the metadata"
    );
    assert_eq!(op.state(&iccid).await, "Installed");
}
