//! The Mobile Plans JavaScript callbacks a portal sends to the app, as the
//! docs spell them ([MP-Callbacks] "Callback notifications"): the
//! object, the method, the arguments, and the exact script.
//!
//! The purchase metadata is written with both spellings the docs use:
//! `line` and `lineType`, `moDirectStatus` and `modirectStatus` (the
//! `MobilePlansInlineOperations` samples use the second ones, the
//! `MobilePlans.*` samples and the table the first ones).

use crate::store::mobileplans::{Choice, PurchaseMetadata};
use serde_json::{json, Value};

/// Every current (not legacy) callback the portal can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallbackKind {
    /// "Inline profile download and connectivity":
    /// `MobilePlansInlineOperations.notifyProfileDownload(purchaseMetaData, activationCode)`.
    InlineProfileDownload,
    /// "Asynchronous connectivity":
    /// `MobilePlans.notifyPurchaseWithProfileDownload(metadata, activationCode, networkRegistrationInterval)`.
    PurchaseWithProfileDownload,
    /// "Delayed eSIM profile download and activation":
    /// `MobilePlansInlineOperations.notifyProfileDownload(purchaseMetaData, activationCode, downloadDelay)`.
    DelayedProfileDownload,
    /// Cancel a delayed download:
    /// `MobilePlansInlineOperations.notifyOperationCancel(operationContext)`.
    OperationCancel,
    /// Add balance (pSIM or an installed eSIM):
    /// `MobilePlansInlineOperations.notifyBalanceAddition(purchaseMetaData[, iccid])`.
    BalanceAddition,
    /// The user cancels the purchase flow:
    /// `MobilePlans.notifyCancelledPurchase(metadata)`.
    CancelledPurchase,
}

impl CallbackKind {
    /// All of them, in the order the decision API lists them.
    pub const ALL: [CallbackKind; 6] = [
        CallbackKind::InlineProfileDownload,
        CallbackKind::PurchaseWithProfileDownload,
        CallbackKind::DelayedProfileDownload,
        CallbackKind::OperationCancel,
        CallbackKind::BalanceAddition,
        CallbackKind::CancelledPurchase,
    ];

    /// A stable name for the rule (JSON `name`, logs, metrics).
    pub fn name(self) -> &'static str {
        match self {
            CallbackKind::InlineProfileDownload => "inlineProfileDownload",
            CallbackKind::PurchaseWithProfileDownload => "purchaseWithProfileDownload",
            CallbackKind::DelayedProfileDownload => "delayedProfileDownload",
            CallbackKind::OperationCancel => "operationCancel",
            CallbackKind::BalanceAddition => "balanceAddition",
            CallbackKind::CancelledPurchase => "cancelledPurchase",
        }
    }

    /// The injected object the method belongs to.
    pub fn object(self) -> &'static str {
        match self {
            CallbackKind::PurchaseWithProfileDownload | CallbackKind::CancelledPurchase => {
                "MobilePlans"
            }
            _ => "MobilePlansInlineOperations",
        }
    }

    /// The method.
    pub fn method(self) -> &'static str {
        match self {
            CallbackKind::InlineProfileDownload | CallbackKind::DelayedProfileDownload => {
                "notifyProfileDownload"
            }
            CallbackKind::PurchaseWithProfileDownload => "notifyPurchaseWithProfileDownload",
            CallbackKind::OperationCancel => "notifyOperationCancel",
            CallbackKind::BalanceAddition => "notifyBalanceAddition",
            CallbackKind::CancelledPurchase => "notifyCancelledPurchase",
        }
    }

    /// The variable name the docs' samples give the metadata: `metadata`
    /// for `MobilePlans.*`, `purchaseMetaData` for the inline operations.
    fn metadata_var(self) -> &'static str {
        match self.object() {
            "MobilePlans" => "metadata",
            _ => "purchaseMetaData",
        }
    }
}

/// `moDirectStatus` ([MP-Callbacks]): the table's values and the cancel
/// sample's `cancelled`, as enum members in code (lowercase first letter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoDirectStatus {
    /// `complete`.
    Complete,
    /// `serviceError`.
    ServiceError,
    /// `cancelled` (the cancel sample; not in the table).
    Cancelled,
    /// `invalidSIM`: the SIM is not one of this operator's.
    InvalidSim,
}

impl MoDirectStatus {
    /// The member name.
    pub fn as_str(self) -> &'static str {
        match self {
            MoDirectStatus::Complete => "complete",
            MoDirectStatus::ServiceError => "serviceError",
            MoDirectStatus::Cancelled => "cancelled",
            MoDirectStatus::InvalidSim => "invalidSIM",
        }
    }
}

/// The purchase metadata object the portal fills in from
/// `MobilePlans.createPurchaseMetaData()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// `userAccount`.
    pub user_account: Choice,
    /// `purchaseInstrument`.
    pub purchase_instrument: Choice,
    /// `line` and `lineType`.
    pub line: Choice,
    /// `moDirectStatus` and `modirectStatus`.
    pub mo_direct_status: MoDirectStatus,
    /// `planName`: non-empty on success, `""` on failure.
    pub plan_name: String,
}

impl Metadata {
    /// A completed purchase.
    pub fn complete(m: &PurchaseMetadata) -> Metadata {
        Metadata {
            user_account: m.user_account,
            purchase_instrument: m.purchase_instrument,
            line: m.line,
            mo_direct_status: MoDirectStatus::Complete,
            plan_name: m.plan_name.clone(),
        }
    }

    /// A purchase that did not complete: the cancel sample sets
    /// `moDirectStatus` to `cancelled`, `line` to `bailed` and `planName`
    /// to `""`; an order that failed at the SM-DP+ reports `serviceError`.
    pub fn ended(m: &PurchaseMetadata, status: MoDirectStatus) -> Metadata {
        Metadata {
            user_account: m.user_account,
            purchase_instrument: m.purchase_instrument,
            line: Choice::Bailed,
            mo_direct_status: status,
            plan_name: String::new(),
        }
    }

    /// The object as JSON, both spellings included.
    pub fn to_json(&self) -> Value {
        json!({
            "userAccount": self.user_account.as_str(),
            "purchaseInstrument": self.purchase_instrument.as_str(),
            "line": self.line.as_str(),
            "lineType": self.line.as_str(),
            "moDirectStatus": self.mo_direct_status.as_str(),
            "modirectStatus": self.mo_direct_status.as_str(),
            "planName": self.plan_name,
        })
    }

    /// The statements that build it in the portal's script.
    fn js(&self, var: &str) -> String {
        let mut s = format!("var {var} = MobilePlans.createPurchaseMetaData();\n");
        for (field, enumeration, value) in [
            (
                "userAccount",
                "MobilePlansUserAccount",
                self.user_account.as_str(),
            ),
            (
                "purchaseInstrument",
                "MobilePlansPurchaseInstrument",
                self.purchase_instrument.as_str(),
            ),
            ("line", "MobilePlansLineType", self.line.as_str()),
            ("lineType", "MobilePlansLineType", self.line.as_str()),
            (
                "moDirectStatus",
                "MobilePlansMoDirectStatus",
                self.mo_direct_status.as_str(),
            ),
            (
                "modirectStatus",
                "MobilePlansMoDirectStatus",
                self.mo_direct_status.as_str(),
            ),
        ] {
            s.push_str(&format!("{var}.{field} = {enumeration}.{value};\n"));
        }
        s.push_str(&format!(
            "{var}.planName = {};\n",
            js_string(&self.plan_name)
        ));
        s
    }
}

/// A callback with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Callback {
    /// See [`CallbackKind::InlineProfileDownload`].
    InlineProfileDownload {
        /// purchaseMetaData.
        metadata: Metadata,
        /// `1$<smdp address>$<matchingId>`.
        activation_code: String,
    },
    /// See [`CallbackKind::PurchaseWithProfileDownload`].
    PurchaseWithProfileDownload {
        /// metadata.
        metadata: Metadata,
        /// `1$<smdp address>$<matchingId>`.
        activation_code: String,
        /// Minutes, rounded to 15; 0 means now.
        network_registration_interval: u32,
    },
    /// See [`CallbackKind::DelayedProfileDownload`].
    DelayedProfileDownload {
        /// purchaseMetaData.
        metadata: Metadata,
        /// `1$<smdp address>$<matchingId>`.
        activation_code: String,
        /// Minutes until the release.
        download_delay: u32,
    },
    /// See [`CallbackKind::OperationCancel`]. The argument is the
    /// `MobilePlansOperationContext` the delayed `notifyProfileDownload`
    /// returned in the page; the server never sees it.
    OperationCancel,
    /// See [`CallbackKind::BalanceAddition`].
    BalanceAddition {
        /// purchaseMetaData.
        metadata: Metadata,
        /// The eSIM profile to switch to, for an eSIM line.
        iccid: Option<String>,
    },
    /// See [`CallbackKind::CancelledPurchase`].
    CancelledPurchase {
        /// metadata.
        metadata: Metadata,
    },
}

impl Callback {
    /// Which callback.
    pub fn kind(&self) -> CallbackKind {
        match self {
            Callback::InlineProfileDownload { .. } => CallbackKind::InlineProfileDownload,
            Callback::PurchaseWithProfileDownload { .. } => {
                CallbackKind::PurchaseWithProfileDownload
            }
            Callback::DelayedProfileDownload { .. } => CallbackKind::DelayedProfileDownload,
            Callback::OperationCancel => CallbackKind::OperationCancel,
            Callback::BalanceAddition { .. } => CallbackKind::BalanceAddition,
            Callback::CancelledPurchase { .. } => CallbackKind::CancelledPurchase,
        }
    }

    fn metadata(&self) -> Option<&Metadata> {
        match self {
            Callback::InlineProfileDownload { metadata, .. }
            | Callback::PurchaseWithProfileDownload { metadata, .. }
            | Callback::DelayedProfileDownload { metadata, .. }
            | Callback::BalanceAddition { metadata, .. }
            | Callback::CancelledPurchase { metadata } => Some(metadata),
            Callback::OperationCancel => None,
        }
    }

    /// Argument names and values, in call order.
    pub fn arguments(&self) -> Vec<(&'static str, Value)> {
        let kind = self.kind();
        let md = |m: &Metadata| (kind.metadata_var(), m.to_json());
        match self {
            Callback::InlineProfileDownload {
                metadata,
                activation_code,
            } => vec![md(metadata), ("activationCode", json!(activation_code))],
            Callback::PurchaseWithProfileDownload {
                metadata,
                activation_code,
                network_registration_interval,
            } => vec![
                md(metadata),
                ("activationCode", json!(activation_code)),
                (
                    "networkRegistrationInterval",
                    json!(network_registration_interval),
                ),
            ],
            Callback::DelayedProfileDownload {
                metadata,
                activation_code,
                download_delay,
            } => vec![
                md(metadata),
                ("activationCode", json!(activation_code)),
                ("downloadDelay", json!(download_delay)),
            ],
            Callback::OperationCancel => vec![("operationContext", Value::Null)],
            Callback::BalanceAddition { metadata, iccid } => {
                let mut v = vec![md(metadata)];
                if let Some(i) = iccid {
                    v.push(("iccid", json!(i)));
                }
                v
            }
            Callback::CancelledPurchase { metadata } => vec![md(metadata)],
        }
    }

    /// The exact script: the metadata statements, then the call. The
    /// delayed download keeps the operation context it returns in
    /// `operationContext`, which `notifyOperationCancel` takes.
    pub fn js(&self) -> String {
        let kind = self.kind();
        let mut s = self
            .metadata()
            .map(|m| m.js(kind.metadata_var()))
            .unwrap_or_default();
        let args: Vec<String> = self
            .arguments()
            .into_iter()
            .map(|(name, value)| match value {
                Value::Object(_) | Value::Null => name.to_owned(),
                Value::String(text) => js_string(&text),
                other => other.to_string(),
            })
            .collect();
        if kind == CallbackKind::DelayedProfileDownload {
            s.push_str("var operationContext = ");
        }
        s.push_str(&format!(
            "{}.{}({});",
            kind.object(),
            kind.method(),
            args.join(", ")
        ));
        s
    }

    /// The JSON the decision API answers.
    pub fn to_json(&self) -> Value {
        let kind = self.kind();
        let args = self.arguments();
        json!({
            "name": kind.name(),
            "object": kind.object(),
            "method": kind.method(),
            "argumentNames": args.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "arguments": args.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "js": self.js(),
        })
    }
}

/// A JavaScript string literal: JSON's, with `<`, U+2028 and U+2029
/// escaped so it is safe inside a `<script>` element too.
pub fn js_string(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_else(|_| "\"\"".into())
        .replace('<', "\\u003c")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md() -> Metadata {
        Metadata::complete(&PurchaseMetadata {
            user_account: Choice::New,
            purchase_instrument: Choice::New,
            line: Choice::New,
            plan_name: "My \"Plan\" </script>".into(),
        })
    }

    #[test]
    fn inline_download_script_matches_the_sample() {
        let c = Callback::InlineProfileDownload {
            metadata: md(),
            activation_code: "1$smdp.address$matchingID".into(),
        };
        let js = c.js();
        assert!(js.starts_with("var purchaseMetaData = MobilePlans.createPurchaseMetaData();\n"));
        assert!(js.contains("purchaseMetaData.lineType = MobilePlansLineType.new;\n"));
        assert!(js.contains("purchaseMetaData.line = MobilePlansLineType.new;\n"));
        assert!(
            js.contains("purchaseMetaData.modirectStatus = MobilePlansMoDirectStatus.complete;\n")
        );
        assert!(
            js.contains("purchaseMetaData.moDirectStatus = MobilePlansMoDirectStatus.complete;\n")
        );
        assert!(js.contains(r#"purchaseMetaData.planName = "My \"Plan\" \u003c/script>";"#));
        assert!(js.ends_with(
            "MobilePlansInlineOperations.notifyProfileDownload(purchaseMetaData, \"1$smdp.address$matchingID\");"
        ));
        let v = c.to_json();
        assert_eq!(v["arguments"][1], "1$smdp.address$matchingID");
        assert_eq!(v["arguments"][0]["moDirectStatus"], "complete");
        assert_eq!(
            v["argumentNames"],
            json!(["purchaseMetaData", "activationCode"])
        );
    }

    #[test]
    fn async_delayed_and_cancel_scripts() {
        let c = Callback::PurchaseWithProfileDownload {
            metadata: md(),
            activation_code: "1$a$B".into(),
            network_registration_interval: 15,
        };
        assert!(c
            .js()
            .ends_with("MobilePlans.notifyPurchaseWithProfileDownload(metadata, \"1$a$B\", 15);"));
        let d = Callback::DelayedProfileDownload {
            metadata: md(),
            activation_code: "1$a$B".into(),
            download_delay: 60,
        };
        assert!(d.js().ends_with(
            "var operationContext = MobilePlansInlineOperations.notifyProfileDownload(purchaseMetaData, \"1$a$B\", 60);"
        ));
        assert_eq!(
            Callback::OperationCancel.js(),
            "MobilePlansInlineOperations.notifyOperationCancel(operationContext);"
        );
        let m = Metadata::ended(
            &PurchaseMetadata {
                user_account: Choice::New,
                purchase_instrument: Choice::New,
                line: Choice::New,
                plan_name: "x".into(),
            },
            MoDirectStatus::Cancelled,
        );
        let js = Callback::CancelledPurchase { metadata: m }.js();
        assert!(js.contains("metadata.moDirectStatus = MobilePlansMoDirectStatus.cancelled;\n"));
        assert!(js.contains("metadata.line = MobilePlansLineType.bailed;\n"));
        assert!(js.contains("metadata.planName = \"\";\n"));
        assert!(js.ends_with("MobilePlans.notifyCancelledPurchase(metadata);"));
        let b = Callback::BalanceAddition {
            metadata: md(),
            iccid: Some("8900000000000000001".into()),
        };
        assert!(b.js().ends_with(
            "MobilePlansInlineOperations.notifyBalanceAddition(purchaseMetaData, \"8900000000000000001\");"
        ));
    }
}
