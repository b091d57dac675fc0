//! Rows and records: how each record the store keeps maps to the columns
//! of its table (schema V1, `migrations/V1__initial.sql`), both ways.
//!
//! - Integers: the records' `u32` counters are `integer`, their `u64` ids
//!   and counters `bigint`; a value that does not fit (either way) is a
//!   [`PgError::Data`], never a silent wrap.
//! - Names: a lifecycle [`State`] is its [`State::as_str`] name (the CHECK
//!   of `profiles.state` lists them); a history [`Event`] is its variant
//!   name as the sled records spell it in JSON (`DownloadOrderLinked`),
//!   because [`Event::as_str`] gives one name to two events; a
//!   [`RetryKind`] is its [`RetryKind::as_str`] name; Mobile Plans statuses
//!   and purchase choices are their `as_str` names, the order kind its
//!   variant name.
//! - Versions: the tables have no record version; a record read back
//!   carries the current one ([`RECORD_VERSION`], [`KEPT_VERSION`]).
//! - `ProfileRecord::package_ref`, the sled key of the package, has no
//!   column: the package is the `package` column of the profile's row. It
//!   is rebuilt as sled writes it (`b/<ICCID>`) so that records read from
//!   either engine compare equal.
//! - Balance buckets are one `jsonb` value, the serde form of the
//!   `Vec<Bucket>`.

use super::PgError;
use crate::store::balance::{BalanceRecord, Bucket};
use crate::store::bound::{KeptPackage, KEPT_VERSION};
use crate::store::lifecycle::{Event, State};
use crate::store::mobileplans::{
    Choice, MobilePlansOrder, OrderKind, OrderStatus, PurchaseMetadata, Registration,
};
use crate::store::record::{
    HistoryEntry, IdemRecord, OutboxItem, PointStatus, ProfileRecord, RetryKind, RECORD_VERSION,
};
use tokio_postgres::types::{FromSql, Json};
use tokio_postgres::Row;

/// A column's value, or a [`PgError::Data`] naming the column.
fn get<'a, T: FromSql<'a>>(row: &'a Row, column: &str) -> Result<T, PgError> {
    row.try_get(column)
        .map_err(|e| PgError::Data(format!("column {column}: {e}")))
}

/// A `u32` as an `integer` column.
pub fn int(v: u32, what: &str) -> Result<i32, PgError> {
    i32::try_from(v).map_err(|_| PgError::Data(format!("{what} {v} does not fit an integer")))
}

/// A `u64` as a `bigint` column.
pub fn bigint(v: u64, what: &str) -> Result<i64, PgError> {
    i64::try_from(v).map_err(|_| PgError::Data(format!("{what} {v} does not fit a bigint")))
}

/// An `integer` column as a `u32`.
pub fn uint(v: i64, what: &str) -> Result<u32, PgError> {
    u32::try_from(v).map_err(|_| PgError::Data(format!("{what} {v} does not fit a u32")))
}

/// An `integer` column, NULL or not, as 4 or 8 bytes: CockroachDB makes
/// `integer` an 8-byte INT8 where PostgreSQL and YugabyteDB keep 4 bytes.
/// (Writes cast their parameter to `int4`, which both accept.)
fn get_int(row: &Row, column: &str) -> Result<Option<i64>, PgError> {
    match row.try_get::<_, Option<i32>>(column) {
        Ok(v) => Ok(v.map(i64::from)),
        Err(_) => get(row, column),
    }
}

/// A NOT NULL `integer` column as a `u32`.
fn get_u32(row: &Row, column: &str) -> Result<u32, PgError> {
    match get_int(row, column)? {
        Some(v) => uint(v, column),
        None => Err(PgError::Data(format!("column {column} is NULL"))),
    }
}

/// A `bigint` column as a `u64`.
pub fn ubig(v: i64, what: &str) -> Result<u64, PgError> {
    u64::try_from(v).map_err(|_| PgError::Data(format!("{what} {v} is negative")))
}

/// A lifecycle state as stored: its [`State::as_str`] name.
pub fn state_name(s: State) -> &'static str {
    s.as_str()
}

/// A stored lifecycle state (the exact name).
pub fn parse_state(s: &str) -> Result<State, PgError> {
    State::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| PgError::Data(format!("unknown profile state {s:?}")))
}

/// A history event as stored: its variant name, as in the sled records'
/// JSON (unlike [`Event::as_str`], one name per event).
pub fn event_name(e: Event) -> Result<String, PgError> {
    match serde_json::to_value(e) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(PgError::Data(format!("event {e:?} has no name"))),
    }
}

/// A stored history event.
pub fn parse_event(s: &str) -> Result<Event, PgError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| PgError::Data(format!("unknown history event {s:?}")))
}

/// A stored retry kind ([`RetryKind::as_str`]).
pub fn parse_retry(s: &str) -> Result<RetryKind, PgError> {
    [RetryKind::SameKey, RetryKind::Rebind]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| PgError::Data(format!("unknown retry kind {s:?}")))
}

/// The `iccid` column of each row.
pub fn iccids(rows: &[Row]) -> Result<Vec<String>, PgError> {
    rows.iter().map(|r| get(r, "iccid")).collect()
}

/// A `profiles` row (the columns of [`super::sql`]'s profile selects:
/// every column but `package`).
pub fn profile(row: &Row) -> Result<ProfileRecord, PgError> {
    let iccid: String = get(row, "iccid")?;
    let state: &str = get(row, "state")?;
    Ok(ProfileRecord {
        v: RECORD_VERSION,
        package_ref: format!("b/{iccid}"),
        profile_type: get(row, "profile_type")?,
        operator: get(row, "operator")?,
        state: parse_state(state)?,
        eid: get(row, "eid")?,
        matching_id: get(row, "matching_id")?,
        cc_hashes: get(row, "cc_hashes")?,
        smds_address: get(row, "smds_address")?,
        download_attempts: get_u32(row, "download_attempts")?,
        cc_attempts: get_u32(row, "cc_attempts")?,
        expires_at: get(row, "expires_at")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        history_len: ubig(get(row, "history_len")?, "history_len")?,
        error_reason: get(row, "error_reason")?,
        imported_by: get(row, "imported_by")?,
        iccid,
    })
}

/// A `profile_history` row.
pub fn history(row: &Row) -> Result<HistoryEntry, PgError> {
    let from: Option<&str> = get(row, "from_state")?;
    let retry: Option<&str> = get(row, "retry")?;
    Ok(HistoryEntry {
        v: RECORD_VERSION,
        at: get(row, "at")?,
        event: parse_event(get(row, "event")?)?,
        from: from.map(parse_state).transpose()?,
        to: parse_state(get(row, "to_state")?)?,
        caller: get(row, "caller")?,
        retry: retry.map(parse_retry).transpose()?,
    })
}

/// The `status`, `failed_subject`, `failed_reason` and `failed_message`
/// columns of a notificationPointStatus (SGP.22 §5.3.5).
pub fn point_status(s: &PointStatus) -> (&'static str, Option<&str>, Option<&str>, Option<&str>) {
    match s {
        PointStatus::Success => ("Success", None, None, None),
        PointStatus::Failed {
            subject,
            reason,
            message,
        } => (
            "Failed",
            Some(subject.as_str()),
            Some(reason.as_str()),
            Some(message.as_str()),
        ),
    }
}

/// An `outbox` row (its lease columns are not part of the item).
pub fn outbox(row: &Row) -> Result<OutboxItem, PgError> {
    let status = match get::<&str>(row, "status")? {
        "Success" => PointStatus::Success,
        "Failed" => {
            let part = |c: &str| -> Result<String, PgError> {
                get::<Option<String>>(row, c)?
                    .ok_or_else(|| PgError::Data(format!("a failed outbox item without {c}")))
            };
            PointStatus::Failed {
                subject: part("failed_subject")?,
                reason: part("failed_reason")?,
                message: part("failed_message")?,
            }
        }
        other => return Err(PgError::Data(format!("unknown point status {other:?}"))),
    };
    Ok(OutboxItem {
        v: RECORD_VERSION,
        id: ubig(get(row, "id")?, "outbox id")?,
        operator: get(row, "operator")?,
        eid: get(row, "eid")?,
        iccid: get(row, "iccid")?,
        profile_type: get(row, "profile_type")?,
        timestamp: get(row, "event_at")?,
        point: get_u32(row, "point")?,
        status,
        result_data: get(row, "result_data")?,
        attempts: get_u32(row, "attempts")?,
        next_attempt_ms: get(row, "next_attempt_ms")?,
        last_error: get(row, "last_error")?,
    })
}

/// A `kept_packages` row.
pub fn kept(row: &Row) -> Result<KeptPackage, PgError> {
    Ok(KeptPackage {
        v: KEPT_VERSION,
        eid: get(row, "eid")?,
        dp_ci: get(row, "dp_ci")?,
        euicc_otpk: get(row, "euicc_otpk")?,
        metadata: get(row, "metadata")?,
        bpp: get(row, "bpp")?,
        expires_at: get(row, "expires_at")?,
    })
}

/// A `balances` row.
pub fn balance(row: &Row) -> Result<BalanceRecord, PgError> {
    let Json(buckets): Json<Vec<Bucket>> = get(row, "buckets")?;
    Ok(BalanceRecord {
        v: RECORD_VERSION,
        iccid: get(row, "iccid")?,
        operator: get(row, "operator")?,
        not_supported: get(row, "not_supported")?,
        buckets,
        next_bucket: ubig(get(row, "next_bucket")?, "next_bucket")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// An `idempotency` row (`key`, `at`, `response`).
pub fn idempotency(row: &Row) -> Result<([u8; 32], IdemRecord), PgError> {
    let key: Vec<u8> = get(row, "key")?;
    let key = <[u8; 32]>::try_from(key.as_slice())
        .map_err(|_| PgError::Data("an idempotency key that is not 32 bytes".into()))?;
    Ok((
        key,
        IdemRecord {
            at: get(row, "at")?,
            response: get(row, "response")?,
        },
    ))
}

/// An order kind as stored: its variant name.
pub fn kind_name(k: OrderKind) -> &'static str {
    match k {
        OrderKind::Profile => "Profile",
        OrderKind::Balance => "Balance",
    }
}

fn parse_kind(s: &str) -> Result<OrderKind, PgError> {
    [OrderKind::Profile, OrderKind::Balance]
        .into_iter()
        .find(|k| kind_name(*k) == s)
        .ok_or_else(|| PgError::Data(format!("unknown order kind {s:?}")))
}

fn parse_status(s: &str) -> Result<OrderStatus, PgError> {
    [
        OrderStatus::Open,
        OrderStatus::Cancelled,
        OrderStatus::Withdrawn,
        OrderStatus::Lapsed,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
    .ok_or_else(|| PgError::Data(format!("unknown order status {s:?}")))
}

fn parse_choice(row: &Row, column: &str) -> Result<Choice, PgError> {
    let s: &str = get(row, column)?;
    [Choice::New, Choice::Existing, Choice::Bailed, Choice::None]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| PgError::Data(format!("column {column}: unknown choice {s:?}")))
}

/// The `registration_interval_minutes` column of a network registration
/// ([MP-Callbacks], "Async connectivity"): NULL is now.
pub fn registration_minutes(r: Registration) -> Result<Option<i32>, PgError> {
    match r {
        Registration::Now => Ok(None),
        Registration::Later { interval_minutes } => {
            int(interval_minutes, "registration interval").map(Some)
        }
    }
}

/// A `mobileplans_orders` row.
pub fn order(row: &Row) -> Result<MobilePlansOrder, PgError> {
    let minutes = get_int(row, "registration_interval_minutes")?;
    let registration = match minutes {
        None => Registration::Now,
        Some(m) => Registration::Later {
            interval_minutes: uint(m, "registration interval")?,
        },
    };
    Ok(MobilePlansOrder {
        v: RECORD_VERSION,
        id: ubig(get(row, "id")?, "order id")?,
        transaction_id: get(row, "transaction_id")?,
        operator: get(row, "operator")?,
        kind: parse_kind(get(row, "kind")?)?,
        eid: get(row, "eid")?,
        iccid: get(row, "iccid")?,
        matching_id: get(row, "matching_id")?,
        registration,
        release_at: get(row, "release_at")?,
        released_at: get(row, "released_at")?,
        release_error: get(row, "release_error")?,
        status: parse_status(get(row, "status")?)?,
        status_at: get(row, "status_at")?,
        metadata: PurchaseMetadata {
            user_account: parse_choice(row, "user_account")?,
            purchase_instrument: parse_choice(row, "purchase_instrument")?,
            line: parse_choice(row, "line")?,
            plan_name: get(row, "plan_name")?,
        },
        bucket: get(row, "bucket")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        hold_until: get(row, "hold_until")?,
        confirmed_at: get(row, "confirmed_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_its_own_name() {
        let mut events: Vec<Event> = crate::store::lifecycle::table()
            .iter()
            .map(|(_, e, _, _)| *e)
            .collect();
        events.extend([Event::Imported, Event::DeviceEnabled, Event::DeviceDeleted]);
        let mut names = std::collections::BTreeMap::new();
        for e in events {
            let n = event_name(e).expect("name");
            assert_eq!(parse_event(&n).expect("parse"), e);
            if let Some(other) = names.insert(n.clone(), e) {
                assert_eq!(other, e, "{n} names two events");
            }
        }
        assert!(names.contains_key("DownloadOrderLinked"));
        assert!(names.contains_key("DownloadOrderAllocated"));
    }

    #[test]
    fn states_and_kinds_parse_exactly() {
        for s in State::ALL {
            assert_eq!(parse_state(state_name(s)).expect("state"), s);
        }
        assert!(parse_state("available").is_err());
        for k in [OrderKind::Profile, OrderKind::Balance] {
            assert_eq!(parse_kind(kind_name(k)).expect("kind"), k);
        }
        assert!(int(u32::MAX, "x").is_err());
        assert!(bigint(u64::MAX, "x").is_err());
        assert!(ubig(-1, "x").is_err());
        assert!(uint(-1, "x").is_err());
        assert!(uint(i64::from(u32::MAX) + 1, "x").is_err());
    }
}
