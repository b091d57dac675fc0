//! Eligibility (SGP.22 §5.6.3, Annex F): a profile whose Profile Policy
//! Rules the eUICC forbids is refused with 8.2.5/4.3, and the rules the
//! profile type carries reach the eUICC in its metadata, with the type's
//! notificationConfigurationInfo.

use crate::common::{iccids, Server, EID};
use smdpplus::asn1::rsp::StoreMetadataRequest;
use smdpplus::euicc::SoftEuicc;

fn config(icon: &std::path::Path) -> String {
    format!(
        "[profile_types.locked]\nservice_provider_name = \"Locked Mobile\"\nprofile_name = \"Locked\"\nprofile_policy_rules = [\"ppr2\"]\nicon = \"{}\"\n\
         [[profile_types.locked.notifications]]\noperations = [\"install\", \"delete\"]\n\
         [[profile_types.locked.notifications]]\noperations = [\"enable\", \"disable\"]\naddress = \"events.operator.example\"\n",
        icon.display()
    )
}

#[tokio::test]
async fn forbidden_policy_rules_make_a_profile_ineligible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let icon = dir.path().join("icon.png");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&[0u8; 40]);
    std::fs::write(&icon, &png).expect("icon");
    let server = Server::start(&dir.path().join("data"), Some(&config(&icon)));
    let op = server.operator();
    let ids = iccids(31, 1);
    op.add_profiles("locked", &ids).await;
    op.order_released(&ids[0], EID).await;
    let lpa = server.lpa();

    // An eUICC that forbids ppr2 (deletion not allowed): not eligible.
    let mut strict = SoftEuicc::sgp26_nist().expect("euicc");
    strict.forbidden_pprs = vec![2];
    let err = lpa
        .authenticate(&mut strict, None)
        .await
        .expect_err("ineligible");
    assert_eq!(err.code().as_deref(), Some("8.2.5/4.3"), "{err}");
    assert_eq!(op.state(&ids[0]).await, "Released");
    assert_eq!(op.show(&ids[0]).await["profile"]["downloadAttempts"], 0);

    // One that forbids only ppr1 takes it, and sees ppr2 in the metadata.
    let mut lenient = SoftEuicc::sgp26_nist().expect("euicc");
    lenient.forbidden_pprs = vec![1];
    let report = lpa
        .download(&mut lenient, None, None, &mut |_| {})
        .await
        .expect("download");
    let meta = StoreMetadataRequest::decode(&report.installed.metadata).expect("metadata");
    let pprs = meta.profile_policy_rules.expect("PPRs in the metadata");
    assert!(pprs.is_set(2) && !pprs.is_set(1));
    assert_eq!(meta.service_provider_name, "Locked Mobile");
    assert_eq!(
        meta.icon.as_deref(),
        Some(png.as_slice()),
        "the configured icon"
    );
    assert_eq!(meta.icon_type, Some(smdpplus::asn1::rsp::IconType::Png));
    // The type's notificationConfigurationInfo, the default address being
    // this SM-DP+'s.
    use smdpplus::asn1::rsp::NotificationOperation as Op;
    let nci: Vec<(Vec<Op>, String)> = meta
        .notification_configuration_info
        .expect("notificationConfigurationInfo")
        .into_iter()
        .map(|n| {
            (
                n.profile_management_operation.operations(),
                n.notification_address,
            )
        })
        .collect();
    assert_eq!(
        nci,
        vec![
            (vec![Op::Install, Op::Delete], "localhost".to_owned()),
            (
                vec![Op::Enable, Op::Disable],
                "events.operator.example".to_owned()
            ),
        ]
    );
    assert_eq!(op.state(&ids[0]).await, "Installed");
}
