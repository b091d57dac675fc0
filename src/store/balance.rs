//! SIM balances for the Windows Mobile Plans GetBalance API
//! ([MP-Account] "Account management"): per ICCID, the buckets that
//! purchases credited, each with its data, its end and the locations where
//! it applies. Usage debits them; a bucket ends with its plan.
//!
//! Data is counted in thousandths of a MB (`_kb`, 1 MB = 1000 kB) so that
//! credits and debits add up exactly; the API shows MB as a double.
//!
//! Keys (one tree with the profiles, so a purchase's balance is written in
//! the same transaction as its order):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `g/` | ICCID | [`BalanceRecord`] |

use super::{gsma, Records, Store, TxResult, RECORD_VERSION};
use crate::error::{codes, Error, Result};
use crate::ids::Iccid;
use serde::{Deserialize, Serialize};

/// The balance `type` ([MP-Account], "Enhanced account management").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BalanceType {
    /// "View my account, no balance".
    #[serde(rename = "MODIRECT")]
    Modirect,
    /// "View my account plus balance".
    #[serde(rename = "MODIRECTPAYG")]
    ModirectPayg,
    /// "Connect with a data plan": the balance is 0.
    #[serde(rename = "NONE")]
    None,
    /// Mobile Plans is disabled for this SIM.
    #[serde(rename = "NOTSUPPORTED")]
    NotSupported,
}

impl BalanceType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceType::Modirect => "MODIRECT",
            BalanceType::ModirectPayg => "MODIRECTPAYG",
            BalanceType::None => "NONE",
            BalanceType::NotSupported => "NOTSUPPORTED",
        }
    }

    /// Parses the wire spelling (exact).
    pub fn parse(s: &str) -> Option<BalanceType> {
        [
            BalanceType::Modirect,
            BalanceType::ModirectPayg,
            BalanceType::None,
            BalanceType::NotSupported,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// What one purchase credited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The operator's internal id of this balance (GetBalance `id`).
    pub id: String,
    /// [`BalanceType::Modirect`] or [`BalanceType::ModirectPayg`].
    pub balance_type: BalanceType,
    /// Data left, in thousandths of a MB.
    pub remaining_kb: u64,
    /// Data credited, in thousandths of a MB.
    pub credited_kb: u64,
    /// Unix time at which the plan ends.
    pub expires_at: i64,
    /// ISO 3166 codes where the bucket applies, as the operator wrote them
    /// (GetBalance `location` is case-sensitive); empty means everywhere.
    pub locations: Vec<String>,
    /// The plan's name.
    pub plan_name: String,
    /// Unix time of the credit.
    pub credited_at: i64,
    /// The Mobile Plans order that credited it, if any.
    pub order: Option<u64>,
}

impl Bucket {
    /// Whether the bucket still gives service at `now` at `location`.
    pub fn active_at(&self, now: i64, location: Option<&str>) -> bool {
        self.remaining_kb > 0
            && self.expires_at > now
            && location
                .is_none_or(|l| self.locations.is_empty() || self.locations.iter().any(|x| x == l))
    }
}

/// A SIM known to the balance API and its buckets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceRecord {
    /// Record version.
    pub v: u32,
    /// Canonical ICCID.
    pub iccid: String,
    /// The operator that owns the SIM.
    pub operator: String,
    /// GetBalance answers NOTSUPPORTED for this SIM.
    pub not_supported: bool,
    /// Credited buckets; ended ones are dropped at the next write.
    pub buckets: Vec<Bucket>,
    /// Next generated bucket number.
    pub next_bucket: u64,
    /// Unix time of registration.
    pub created_at: i64,
    /// Unix time of the last change.
    pub updated_at: i64,
}

/// A credit to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    /// Bucket id; generated (`<ICCID>-<n>`) when absent.
    pub id: Option<String>,
    /// [`BalanceType::Modirect`] or [`BalanceType::ModirectPayg`].
    pub balance_type: BalanceType,
    /// Data credited, in thousandths of a MB.
    pub data_kb: u64,
    /// Unix time at which the plan ends.
    pub expires_at: i64,
    /// Where it applies; empty means everywhere.
    pub locations: Vec<String>,
    /// Plan name.
    pub plan_name: String,
}

/// What a usage report did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Debited {
    /// The record after the debit.
    pub record: BalanceRecord,
    /// Usage no active bucket covered, in thousandths of a MB.
    pub uncovered_kb: u64,
}

impl BalanceRecord {
    /// A SIM with no balance.
    pub fn new(iccid: &Iccid, operator: &str, now: i64) -> BalanceRecord {
        BalanceRecord {
            v: RECORD_VERSION,
            iccid: iccid.as_str().to_owned(),
            operator: operator.to_owned(),
            not_supported: false,
            buckets: vec![],
            next_bucket: 1,
            created_at: now,
            updated_at: now,
        }
    }

    /// The buckets that give service at `now` at `location`, ending first
    /// first.
    pub fn active(&self, now: i64, location: Option<&str>) -> Vec<&Bucket> {
        let mut v: Vec<&Bucket> = self
            .buckets
            .iter()
            .filter(|b| b.active_at(now, location))
            .collect();
        v.sort_by_key(|b| (b.expires_at, b.credited_at));
        v
    }

    /// Drops buckets that ended or ran out.
    fn prune(&mut self, now: i64) {
        self.buckets
            .retain(|b| b.remaining_kb > 0 && b.expires_at > now);
    }

    /// Adds a bucket; returns its id.
    pub fn credit(&mut self, c: &Credit, order: Option<u64>, now: i64) -> String {
        self.prune(now);
        let id = c.id.clone().unwrap_or_else(|| {
            let id = format!("{}-{}", self.iccid, self.next_bucket);
            self.next_bucket += 1;
            id
        });
        self.buckets.push(Bucket {
            id: id.clone(),
            balance_type: c.balance_type,
            remaining_kb: c.data_kb,
            credited_kb: c.data_kb,
            expires_at: c.expires_at,
            locations: c.locations.clone(),
            plan_name: c.plan_name.clone(),
            credited_at: now,
            order,
        });
        self.updated_at = now;
        id
    }

    /// Debits `kb` from the active buckets at `location`, the one ending
    /// first first; returns what no bucket covered.
    pub fn debit(&mut self, kb: u64, location: Option<&str>, now: i64) -> u64 {
        let mut order: Vec<usize> = (0..self.buckets.len())
            .filter(|i| self.buckets[*i].active_at(now, location))
            .collect();
        order.sort_by_key(|i| (self.buckets[*i].expires_at, self.buckets[*i].credited_at));
        let mut left = kb;
        for i in order {
            let b = &mut self.buckets[i];
            let take = left.min(b.remaining_kb);
            b.remaining_kb -= take;
            left -= take;
            if left == 0 {
                break;
            }
        }
        self.prune(now);
        self.updated_at = now;
        left
    }
}

/// The SIM's balance record for `operator`, a new one if it has none,
/// inside a transaction; another operator's SIM is unknown (8.2.1/3.9).
fn operators_tx(
    tx: &dyn Records,
    operator: &str,
    iccid: &Iccid,
    now: i64,
) -> TxResult<BalanceRecord> {
    match tx.balance(iccid.as_str())? {
        Some(r) if r.operator != operator => gsma(super::unknown_iccid(iccid)),
        Some(r) => Ok(r),
        None => Ok(BalanceRecord::new(iccid, operator, now)),
    }
}

/// Credits a bucket inside a transaction, registering the SIM on first
/// credit. Refuses another operator's SIM.
pub(super) fn credit_tx(
    tx: &dyn Records,
    operator: &str,
    iccid: &Iccid,
    credit: &Credit,
    order: Option<u64>,
    now: i64,
) -> TxResult<(BalanceRecord, String)> {
    let mut rec = operators_tx(tx, operator, iccid, now)?;
    if credit
        .id
        .as_ref()
        .is_some_and(|id| rec.buckets.iter().any(|b| &b.id == id))
    {
        return gsma(Error::refused(
            codes::ICCID_IN_USE,
            format!("balance id {:?} already exists", credit.id),
        ));
    }
    let id = rec.credit(credit, order, now);
    tx.put_balance(&rec)?;
    Ok((rec, id))
}

/// Removes the bucket a cancelled order credited, inside a transaction.
pub(super) fn remove_bucket_tx(
    tx: &dyn Records,
    iccid: &str,
    bucket: &str,
    now: i64,
) -> TxResult<()> {
    if let Some(mut rec) = tx.balance(iccid)? {
        rec.buckets.retain(|b| b.id != bucket);
        rec.updated_at = now;
        tx.put_balance(&rec)?;
    }
    Ok(())
}

impl Store {
    /// A SIM's balance record.
    pub fn balance(&self, iccid: &Iccid) -> Result<Option<BalanceRecord>> {
        self.engine().balance(iccid.as_str())
    }

    /// Whether the ICCID names a profile or a registered SIM.
    pub fn sim_known(&self, iccid: &Iccid) -> Result<bool> {
        self.engine().sim_known(iccid.as_str())
    }

    /// Registers a SIM for the balance API (a warm physical SIM before its
    /// first purchase answers a zero balance, not 404), or changes whether
    /// Mobile Plans is supported for it. Not yet durable: [`Store::sync`].
    pub fn register_sim(
        &self,
        operator: &str,
        iccid: &Iccid,
        not_supported: bool,
        now: i64,
    ) -> Result<BalanceRecord> {
        self.transact(|tx| {
            let mut rec = operators_tx(tx, operator, iccid, now)?;
            rec.not_supported = not_supported;
            rec.updated_at = now;
            tx.put_balance(&rec)?;
            Ok(rec)
        })
    }

    /// Credits a bucket outside any Mobile Plans order. Not yet durable.
    pub fn credit_balance(
        &self,
        operator: &str,
        iccid: &Iccid,
        credit: &Credit,
        now: i64,
    ) -> Result<(BalanceRecord, String)> {
        self.transact(|tx| credit_tx(tx, operator, iccid, credit, None, now))
    }

    /// Debits usage (`POST /v1/sims/{simId}/usage`). Refuses an unknown
    /// SIM (8.2.1/3.9) and another operator's. A profile without a balance
    /// record debits nothing. Not yet durable.
    pub fn debit_usage(
        &self,
        operator: &str,
        iccid: &Iccid,
        used_kb: u64,
        location: Option<&str>,
        now: i64,
    ) -> Result<Debited> {
        if !self.sim_known(iccid)? {
            return Err(super::unknown_iccid(iccid));
        }
        self.transact(|tx| {
            let mut rec = operators_tx(tx, operator, iccid, now)?;
            let uncovered_kb = rec.debit(used_kb, location, now);
            tx.put_balance(&rec)?;
            Ok(Debited {
                record: rec,
                uncovered_kb,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit(kb: u64, expires_at: i64, locations: &[&str]) -> Credit {
        Credit {
            id: None,
            balance_type: BalanceType::ModirectPayg,
            data_kb: kb,
            expires_at,
            locations: locations.iter().map(|s| s.to_string()).collect(),
            plan_name: "p".into(),
        }
    }

    #[test]
    fn debit_takes_from_the_bucket_ending_first_and_reports_the_rest() {
        let iccid = Iccid::parse("8944000000000000001").expect("iccid");
        let mut r = BalanceRecord::new(&iccid, "op", 0);
        let a = r.credit(&credit(5_000, 200, &[]), None, 0);
        let b = r.credit(&credit(3_000, 100, &[]), None, 0);
        assert_eq!(r.active(10, None)[0].id, b);
        assert_eq!(r.debit(4_000, None, 10), 0);
        assert_eq!(r.buckets.len(), 1, "the emptied bucket is dropped");
        assert_eq!(r.buckets[0].id, a);
        assert_eq!(r.buckets[0].remaining_kb, 4_000);
        assert_eq!(r.debit(10_000, None, 10), 6_000);
        assert!(r.active(10, None).is_empty());
    }

    #[test]
    fn locations_are_case_sensitive_and_empty_means_everywhere() {
        let iccid = Iccid::parse("8944000000000000001").expect("iccid");
        let mut r = BalanceRecord::new(&iccid, "op", 0);
        r.credit(&credit(1_000, 100, &["US"]), None, 0);
        assert_eq!(r.active(1, Some("US")).len(), 1);
        assert!(r.active(1, Some("us")).is_empty());
        assert_eq!(r.active(1, None).len(), 1);
        r.credit(&credit(1_000, 100, &[]), None, 0);
        assert_eq!(r.active(1, Some("us")).len(), 1);
        assert!(r.active(100, None).is_empty(), "ended with the plan");
    }
}
