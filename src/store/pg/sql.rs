//! The PostgreSQL store's queries: one plain async function per record
//! operation, each the counterpart of a sled read or write of the same
//! meaning (the [`Records`](crate::store) operations of a command
//! transaction, and the store's reads and writes outside commands). Every
//! function takes a [`GenericClient`] (a connection or a transaction);
//! which transaction a call runs in is the caller's choice. The SQL is
//! constant text with parameters, never values formatted in, and each
//! statement is prepared once per pooled connection (`prepare_cached`):
//! a command then costs one round trip per statement and no parsing or
//! planning after the first use.
//!
//! # Isolation
//! Commands run under READ COMMITTED, and every read inside a command
//! transaction locks what it reads (`SELECT ... FOR UPDATE`: the `*_for_update`
//! functions, [`matching_owner`], [`use_of`], [`order_exists`]). A
//! read-modify-write of a row is therefore serialised: a second
//! transaction waits at its read until the first commits, then reads the
//! committed row. A row that does not exist cannot be locked: when two
//! transactions both find a key missing and both insert it (a history
//! entry, a Mobile Plans transactionId, a matchingId, a balance, a
//! GetBalance transaction id), the second meets the unique index and fails
//! with SQLSTATE 23505, which the caller treats like a serialization
//! failure ([`super::Conflict`]) and runs the command again; the new
//! attempt sees the winner's row. That is why a write that follows a read
//! which found nothing is a plain insert, never an upsert that would
//! overwrite the other transaction's row ([`put_balance`] and [`put_use`]
//! are told which it is; new outbox items and orders have fresh ids, and
//! kept packages are written under their profile's lock). History rows are
//! written once and never changed, so [`history_entry`] reads without a
//! lock.
//!
//! Pool allocation ([`pool_candidate`]) takes `FOR UPDATE SKIP LOCKED`:
//! concurrent allocators, on one node or many, never take the same row and
//! never wait for each other. The outbox is delivered under leases
//! ([`outbox_claim_due`]): an item is delivered by one node at a time, and
//! one whose node died is claimed again once its lease ran out.
//!
//! The SQL also runs on the PostgreSQL-compatible distributed databases
//! (CockroachDB, YugabyteDB): no advisory locks, triggers or functions;
//! `ON CONFLICT`, `SKIP LOCKED`, sequences and partial indexes only. Bulk
//! deletes go in batches, which keeps each statement short there. The
//! `integer` columns are 8 bytes on CockroachDB: writes cast their
//! parameter to `int4` and reads take either width ([`rows`]).

use super::rows::{self, bigint, int, point_status, registration_minutes, state_name, ubig};
use super::PgError;
use crate::store::balance::BalanceRecord;
use crate::store::bound::KeptPackage;
use crate::store::lifecycle::State;
use crate::store::mobileplans::MobilePlansOrder;
use crate::store::record::{HistoryEntry, IdemRecord, OutboxItem, ProfileRecord};
use crate::store::session::{Admission, SessionCounts, MAX_EVICTIONS_PER_CREATE};
use crate::store::{ListFilter, NewProfile};
use deadpool_postgres::GenericClient;
use std::collections::{BTreeSet, HashSet};
use tokio_postgres::types::Json;

/// A transaction on a pooled connection, whose statements are prepared
/// once per connection (the copy functions run many of the same).
pub type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// The columns of a profile select: every column but the package.
macro_rules! profile_columns {
    () => {
        "iccid, operator, profile_type, state, eid, matching_id, cc_hashes, smds_address, \
         download_attempts, cc_attempts, expires_at, created_at, updated_at, history_len, \
         error_reason, imported_by"
    };
}

/// The columns of a history select.
macro_rules! history_columns {
    () => {
        "at, event, from_state, to_state, caller, retry"
    };
}

/// The columns of an outbox select (not the lease).
macro_rules! outbox_columns {
    () => {
        "id, operator, eid, iccid, profile_type, event_at, point, status, failed_subject, \
         failed_reason, failed_message, result_data, attempts, next_attempt_ms, last_error"
    };
}

/// The columns of a kept package select.
macro_rules! kept_columns {
    () => {
        "eid, dp_ci, euicc_otpk, metadata, bpp, expires_at"
    };
}

/// The columns of a balance select.
macro_rules! balance_columns {
    () => {
        "iccid, operator, not_supported, buckets, next_bucket, created_at, updated_at"
    };
}

/// The columns of a Mobile Plans order select.
macro_rules! order_columns {
    () => {
        "id, transaction_id, operator, kind, eid, iccid, matching_id, \
         registration_interval_minutes, release_at, released_at, release_error, status, \
         status_at, user_account, purchase_instrument, line, plan_name, bucket, created_at, \
         updated_at, hold_until, confirmed_at"
    };
}

/// The states of an open order ([`State::is_pending_order`]): the ones the
/// sled store keeps in its EID index (`e/`).
macro_rules! pending_states {
    () => {
        "('Allocated', 'Linked', 'Confirmed', 'Released', 'Downloaded')"
    };
}

/// The states an order can expire from ([`State::can_expire`]): the ones
/// the sled store keeps in its expiry index (`x/`). The same list as the
/// predicate of the `profiles_expiry` index, so that the planner uses it.
macro_rules! expiring_states {
    () => {
        "('Allocated', 'Linked', 'Confirmed', 'Released', 'Downloaded')"
    };
}

/// The condition of a scheduled release still to do
/// ([`MobilePlansOrder::release_pending`]), as in the predicate of the
/// `mobileplans_orders_release` index.
macro_rules! release_pending {
    () => {
        "status = 'open' AND kind = 'Profile' AND release_at IS NOT NULL \
         AND released_at IS NULL AND release_error IS NULL \
         AND (hold_until IS NULL OR confirmed_at IS NOT NULL)"
    };
}

/// The condition of a portal hold awaiting its confirmation
/// ([`MobilePlansOrder::hold_pending`]), as in the predicate of the
/// `mobileplans_orders_hold` index.
macro_rules! hold_pending {
    () => {
        "status = 'open' AND kind = 'Profile' AND hold_until IS NOT NULL \
         AND confirmed_at IS NULL"
    };
}

/// Rows one statement of [`insert_profiles`] inserts at most.
pub const INSERT_BATCH: usize = 1000;

/// Package bytes one statement of [`insert_profiles`] carries at most
/// (beyond a single package that is larger on its own).
pub const INSERT_BATCH_BYTES: usize = 16 << 20;

/// Rows one statement of a bulk delete removes at most.
pub const DELETE_BATCH: i64 = 1024;

/// The session phase of a session created by ES9+.InitiateAuthentication.
const PENDING: &str = "pending";

/// The session phase from ES9+.AuthenticateClient on.
const AUTHENTICATED: &str = "authenticated";

/// The rows of a query mapped by `f`.
fn map_rows<T>(
    rows: Vec<tokio_postgres::Row>,
    f: impl Fn(&tokio_postgres::Row) -> Result<T, PgError>,
) -> Result<Vec<T>, PgError> {
    rows.iter().map(f).collect()
}

/// Runs a batched delete (`$1` its condition's parameter, `$2` the batch
/// size) until a batch removes fewer rows than the batch size.
async fn delete_in_batches<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    param: i64,
) -> Result<usize, PgError> {
    let mut n = 0u64;
    loop {
        let removed = c
            .execute(&c.prepare_cached(sql).await?, &[&param, &DELETE_BATCH])
            .await?;
        n += removed;
        if removed < DELETE_BATCH as u64 {
            return Ok(usize::try_from(n).unwrap_or(usize::MAX));
        }
    }
}

/// A count as a `usize`.
fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

// ---------------------------------------------------------------------
// Inside a command transaction: the record operations.
// ---------------------------------------------------------------------

const PROFILE_FOR_UPDATE: &str = concat!(
    "SELECT ",
    profile_columns!(),
    " FROM profiles WHERE iccid = $1 FOR UPDATE"
);

/// The profile record of `iccid`, its row locked until the transaction
/// ends.
pub async fn profile_for_update<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
) -> Result<Option<ProfileRecord>, PgError> {
    c.query_opt(&c.prepare_cached(PROFILE_FOR_UPDATE).await?, &[&iccid])
        .await?
        .as_ref()
        .map(rows::profile)
        .transpose()
}

const MATCHING_OWNER: &str =
    "SELECT iccid FROM profiles WHERE matching_id = $1 AND matching_id <> '' FOR UPDATE";

/// The ICCID whose order holds `matching_id`, its row locked. The empty
/// MatchingID (SGP.22 §5.3.2) names no order.
pub async fn matching_owner<C: GenericClient + Sync>(
    c: &C,
    matching_id: &str,
) -> Result<Option<String>, PgError> {
    if matching_id.is_empty() {
        return Ok(None);
    }
    Ok(
        c.query_opt(&c.prepare_cached(MATCHING_OWNER).await?, &[&matching_id])
            .await?
            .map(|r| r.try_get("iccid"))
            .transpose()?,
    )
}

const HISTORY_ENTRY: &str = concat!(
    "SELECT ",
    history_columns!(),
    " FROM profile_history WHERE iccid = $1 AND seq = $2"
);

/// Entry `seq` (from 0) of a profile's stored history. History rows never
/// change once written: no lock.
pub async fn history_entry<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
    seq: u64,
) -> Result<Option<HistoryEntry>, PgError> {
    let seq = bigint(seq, "history seq")?;
    c.query_opt(&c.prepare_cached(HISTORY_ENTRY).await?, &[&iccid, &seq])
        .await?
        .as_ref()
        .map(rows::history)
        .transpose()
}

const PUT_PROFILE: &str = "UPDATE profiles SET operator = $2, profile_type = $3, state = $4, \
     eid = $5, matching_id = $6, cc_hashes = $7, smds_address = $8, \
     download_attempts = $9::int4, cc_attempts = $10::int4, expires_at = $11, \
     created_at = $12, updated_at = $13, \
     history_len = $14, error_reason = $15, imported_by = $16 WHERE iccid = $1";

/// Writes a profile record over its row (every column but the package,
/// which only [`insert_profiles`] and [`swap_package`] write). The indexes
/// follow the row, so nothing else moves. An error if the row is missing:
/// commands only change profiles that exist.
pub async fn put_profile<C: GenericClient + Sync>(
    c: &C,
    new: &ProfileRecord,
) -> Result<(), PgError> {
    let n = c
        .execute(
            PUT_PROFILE,
            &[
                &new.iccid,
                &new.operator,
                &new.profile_type,
                &state_name(new.state),
                &new.eid,
                &new.matching_id,
                &new.cc_hashes,
                &new.smds_address,
                &int(new.download_attempts, "download_attempts")?,
                &int(new.cc_attempts, "cc_attempts")?,
                &new.expires_at,
                &new.created_at,
                &new.updated_at,
                &bigint(new.history_len, "history_len")?,
                &new.error_reason,
                &new.imported_by,
            ],
        )
        .await?;
    if n != 1 {
        return Err(PgError::Data(format!(
            "profile {} is not in the store",
            new.iccid
        )));
    }
    Ok(())
}

const INSERT_HISTORY: &str = "INSERT INTO profile_history \
     (iccid, seq, at, event, from_state, to_state, caller, retry) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Writes entry `seq` of a profile's history. Two transactions writing the
/// same entry meet at the primary key (23505: a conflict, run again).
pub async fn insert_history<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
    seq: u64,
    entry: &HistoryEntry,
) -> Result<(), PgError> {
    c.execute(
        &c.prepare_cached(INSERT_HISTORY).await?,
        &[
            &iccid,
            &bigint(seq, "history seq")?,
            &entry.at,
            &rows::event_name(entry.event)?,
            &entry.from.map(state_name),
            &state_name(entry.to),
            &entry.caller,
            &entry.retry.map(|r| r.as_str()),
        ],
    )
    .await?;
    Ok(())
}

/// A fresh id for an outbox item or a Mobile Plans order, from the one
/// sequence both share (`record_ids`). Not rolled back with the
/// transaction: an aborted attempt leaves a gap, as ids need only be new.
pub async fn new_id<C: GenericClient + Sync>(c: &C) -> Result<u64, PgError> {
    let id: i64 = c
        .query_one("SELECT nextval('record_ids')", &[])
        .await?
        .try_get(0)?;
    ubig(id, "record id")
}

const OUTBOX_FOR_UPDATE: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM outbox WHERE id = $1 FOR UPDATE"
);

/// An outbox item, its row locked.
pub async fn outbox_item_for_update<C: GenericClient + Sync>(
    c: &C,
    id: u64,
) -> Result<Option<OutboxItem>, PgError> {
    c.query_opt(
        &c.prepare_cached(OUTBOX_FOR_UPDATE).await?,
        &[&bigint(id, "outbox id")?],
    )
    .await?
    .as_ref()
    .map(rows::outbox)
    .transpose()
}

const PUT_OUTBOX: &str = "INSERT INTO outbox (id, operator, eid, iccid, profile_type, event_at, \
     point, status, failed_subject, failed_reason, failed_message, result_data, attempts, \
     next_attempt_ms, last_error, leased_until, leased_by) \
     VALUES ($1, $2, $3, $4, $5, $6, $7::int4, $8, $9, $10, $11, $12, $13::int4, $14, $15, \
     NULL, NULL) \
     ON CONFLICT (id) DO UPDATE SET operator = EXCLUDED.operator, eid = EXCLUDED.eid, \
     iccid = EXCLUDED.iccid, profile_type = EXCLUDED.profile_type, \
     event_at = EXCLUDED.event_at, point = EXCLUDED.point, status = EXCLUDED.status, \
     failed_subject = EXCLUDED.failed_subject, failed_reason = EXCLUDED.failed_reason, \
     failed_message = EXCLUDED.failed_message, result_data = EXCLUDED.result_data, \
     attempts = EXCLUDED.attempts, next_attempt_ms = EXCLUDED.next_attempt_ms, \
     last_error = EXCLUDED.last_error, leased_until = NULL, leased_by = NULL";

/// Writes an outbox item (ES2+ handleDownloadProgressInfo, SGP.22 §5.3.5):
/// a new one, or an existing one after a failed delivery attempt. Either
/// way the item is free of any lease: due again at its `next_attempt_ms`.
pub async fn put_outbox<C: GenericClient + Sync>(c: &C, item: &OutboxItem) -> Result<(), PgError> {
    let (status, subject, reason, message) = point_status(&item.status);
    c.execute(
        &c.prepare_cached(PUT_OUTBOX).await?,
        &[
            &bigint(item.id, "outbox id")?,
            &item.operator,
            &item.eid,
            &item.iccid,
            &item.profile_type,
            &item.timestamp,
            &int(item.point, "point")?,
            &status,
            &subject,
            &reason,
            &message,
            &item.result_data,
            &int(item.attempts, "attempts")?,
            &item.next_attempt_ms,
            &item.last_error,
        ],
    )
    .await?;
    Ok(())
}

/// Removes an outbox item (delivered, or its order gone), lease and all.
/// Whether it was there.
pub async fn remove_outbox<C: GenericClient + Sync>(c: &C, id: u64) -> Result<bool, PgError> {
    Ok(c.execute(
        &c.prepare_cached("DELETE FROM outbox WHERE id = $1").await?,
        &[&bigint(id, "outbox id")?],
    )
    .await?
        == 1)
}

const PUT_KEPT: &str = "INSERT INTO kept_packages \
     (iccid, eid, dp_ci, euicc_otpk, metadata, bpp, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (iccid) DO UPDATE SET eid = EXCLUDED.eid, dp_ci = EXCLUDED.dp_ci, \
     euicc_otpk = EXCLUDED.euicc_otpk, metadata = EXCLUDED.metadata, bpp = EXCLUDED.bpp, \
     expires_at = EXCLUDED.expires_at";

/// Keeps the Bound Profile Package delivered for `iccid` for a retry in a
/// later RSP session (SGP.22 §5.6.2, §5.6.3), or erases it (`None`). Kept
/// packages change only with their profile's transitions, under its row
/// lock: an upsert is safe.
pub async fn put_kept<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
    kept: Option<&KeptPackage>,
) -> Result<(), PgError> {
    match kept {
        Some(p) => {
            c.execute(
                &c.prepare_cached(PUT_KEPT).await?,
                &[
                    &iccid,
                    &p.eid,
                    &p.dp_ci,
                    &p.euicc_otpk,
                    &p.metadata,
                    &p.bpp,
                    &p.expires_at,
                ],
            )
            .await?
        }
        None => {
            c.execute(
                &c.prepare_cached("DELETE FROM kept_packages WHERE iccid = $1")
                    .await?,
                &[&iccid],
            )
            .await?
        }
    };
    Ok(())
}

const PUT_IDEMPOTENCY: &str = "INSERT INTO idempotency (key, at, expires_at, response) \
     VALUES ($1, $2, $2, $3) ON CONFLICT (key) DO UPDATE SET at = EXCLUDED.at, \
     expires_at = EXCLUDED.expires_at, response = EXCLUDED.response";

/// Keeps the answer to an ES2+ call for a re-send of it. The row's
/// `expires_at` is the record's time (`at`), which [`prune_idempotency`]
/// compares with its cutoff, as the sled store prunes by that time.
pub async fn put_idempotency<C: GenericClient + Sync>(
    c: &C,
    key: &[u8; 32],
    record: &IdemRecord,
) -> Result<(), PgError> {
    c.execute(
        &c.prepare_cached(PUT_IDEMPOTENCY).await?,
        &[&key.as_slice(), &record.at, &record.response],
    )
    .await?;
    Ok(())
}

const BALANCE_FOR_UPDATE: &str = concat!(
    "SELECT ",
    balance_columns!(),
    " FROM balances WHERE iccid = $1 FOR UPDATE"
);

/// A SIM's balance record, its row locked.
pub async fn balance_for_update<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
) -> Result<Option<BalanceRecord>, PgError> {
    c.query_opt(&c.prepare_cached(BALANCE_FOR_UPDATE).await?, &[&iccid])
        .await?
        .as_ref()
        .map(rows::balance)
        .transpose()
}

const INSERT_BALANCE: &str = "INSERT INTO balances \
     (iccid, operator, not_supported, buckets, next_bucket, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

const UPDATE_BALANCE: &str = "UPDATE balances SET operator = $2, not_supported = $3, \
     buckets = $4, next_bucket = $5, created_at = $6, updated_at = $7 WHERE iccid = $1";

/// Writes a SIM's balance record, buckets whole. `new`: the transaction
/// found no record for the SIM ([`balance_for_update`] gave `None`), so
/// the row is inserted, and a transaction that registered the same SIM
/// meanwhile makes the insert fail with a unique violation (a conflict:
/// the command runs again and credits the record the other one wrote,
/// where an upsert would overwrite that credit). Otherwise the row, locked
/// by the read, is updated.
pub async fn put_balance<C: GenericClient + Sync>(
    c: &C,
    record: &BalanceRecord,
    new: bool,
) -> Result<(), PgError> {
    let n = c
        .execute(
            if new { INSERT_BALANCE } else { UPDATE_BALANCE },
            &[
                &record.iccid,
                &record.operator,
                &record.not_supported,
                &Json(&record.buckets),
                &bigint(record.next_bucket, "next_bucket")?,
                &record.created_at,
                &record.updated_at,
            ],
        )
        .await?;
    if n != 1 {
        return Err(PgError::Data(format!(
            "the balance record of {} is not in the store",
            record.iccid
        )));
    }
    Ok(())
}

/// When a GetBalance `X-MS-DM-TransactionId` was last recorded as used,
/// its row locked.
pub async fn use_of<C: GenericClient + Sync>(c: &C, id: &str) -> Result<Option<i64>, PgError> {
    Ok(c.query_opt(
        &c.prepare_cached("SELECT at FROM balance_transaction_ids WHERE id = $1 FOR UPDATE")
            .await?,
        &[&id],
    )
    .await?
    .map(|r| r.try_get("at"))
    .transpose()?)
}

/// Records a use of `id` at `at`, replacing the one at `old` ([`use_of`]
/// in the same transaction). A first use (`old` is `None`) is an insert:
/// two transactions recording the first use of one id at once meet at the
/// primary key (a conflict, and the new attempt sees the other's use), so
/// only one of them is the first.
pub async fn put_use<C: GenericClient + Sync>(
    c: &C,
    id: &str,
    old: Option<i64>,
    at: i64,
) -> Result<(), PgError> {
    let sql = match old {
        None => "INSERT INTO balance_transaction_ids (id, at) VALUES ($1, $2)",
        Some(_) => "UPDATE balance_transaction_ids SET at = $2 WHERE id = $1",
    };
    c.execute(&c.prepare_cached(sql).await?, &[&id, &at])
        .await?;
    Ok(())
}

const ORDER_FOR_UPDATE: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM mobileplans_orders WHERE id = $1 FOR UPDATE"
);

/// A Mobile Plans order, its row locked.
pub async fn order_for_update<C: GenericClient + Sync>(
    c: &C,
    id: u64,
) -> Result<Option<MobilePlansOrder>, PgError> {
    c.query_opt(
        &c.prepare_cached(ORDER_FOR_UPDATE).await?,
        &[&bigint(id, "order id")?],
    )
    .await?
    .as_ref()
    .map(rows::order)
    .transpose()
}

/// Whether a Mobile Plans transactionId has an order (its row locked when
/// it has).
pub async fn order_exists<C: GenericClient + Sync>(
    c: &C,
    transaction_id: &str,
) -> Result<bool, PgError> {
    Ok(c.query_opt(
        &c.prepare_cached("SELECT id FROM mobileplans_orders WHERE transaction_id = $1 FOR UPDATE")
            .await?,
        &[&transaction_id],
    )
    .await?
    .is_some())
}

const PUT_ORDER: &str = concat!(
    "INSERT INTO mobileplans_orders (",
    order_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8::int4, $9, $10, $11, $12, $13, $14, $15, $16, \
     $17, $18, $19, $20, $21, $22) \
     ON CONFLICT (id) DO UPDATE SET transaction_id = EXCLUDED.transaction_id, \
     operator = EXCLUDED.operator, kind = EXCLUDED.kind, eid = EXCLUDED.eid, \
     iccid = EXCLUDED.iccid, matching_id = EXCLUDED.matching_id, \
     registration_interval_minutes = EXCLUDED.registration_interval_minutes, \
     release_at = EXCLUDED.release_at, released_at = EXCLUDED.released_at, \
     release_error = EXCLUDED.release_error, status = EXCLUDED.status, \
     status_at = EXCLUDED.status_at, user_account = EXCLUDED.user_account, \
     purchase_instrument = EXCLUDED.purchase_instrument, line = EXCLUDED.line, \
     plan_name = EXCLUDED.plan_name, bucket = EXCLUDED.bucket, \
     created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
     hold_until = EXCLUDED.hold_until, confirmed_at = EXCLUDED.confirmed_at"
);

/// Writes a Mobile Plans order (a new one, or over the one with its id).
/// A second order for a transactionId meets its unique index (23505: a
/// conflict; the new attempt finds the order with [`order_exists`]).
pub async fn put_order<C: GenericClient + Sync>(
    c: &C,
    o: &MobilePlansOrder,
) -> Result<(), PgError> {
    c.execute(
        &c.prepare_cached(PUT_ORDER).await?,
        &[
            &bigint(o.id, "order id")?,
            &o.transaction_id,
            &o.operator,
            &rows::kind_name(o.kind),
            &o.eid,
            &o.iccid,
            &o.matching_id,
            &registration_minutes(o.registration)?,
            &o.release_at,
            &o.released_at,
            &o.release_error,
            &o.status.as_str(),
            &o.status_at,
            &o.metadata.user_account.as_str(),
            &o.metadata.purchase_instrument.as_str(),
            &o.metadata.line.as_str(),
            &o.metadata.plan_name,
            &o.bucket,
            &o.created_at,
            &o.updated_at,
            &o.hold_until,
            &o.confirmed_at,
        ],
    )
    .await?;
    Ok(())
}

const POOL_CANDIDATE: &str = "SELECT iccid FROM profiles \
     WHERE operator = $1 AND profile_type = $2 AND state = 'Available' \
     ORDER BY iccid LIMIT 1 FOR UPDATE SKIP LOCKED";

/// A free profile of the pool (operator, type) for ES2+.DownloadOrder by
/// profile type (SGP.22 §5.3.1), its row locked: the first one in ICCID
/// order that no other transaction holds. Concurrent allocators, on any
/// node, skip each other's rows: they never take the same profile and
/// never wait. `None` when every free profile is taken or held.
pub async fn pool_candidate<C: GenericClient + Sync>(
    c: &C,
    operator: &str,
    profile_type: &str,
) -> Result<Option<String>, PgError> {
    Ok(c.query_opt(
        &c.prepare_cached(POOL_CANDIDATE).await?,
        &[&operator, &profile_type],
    )
    .await?
    .map(|r| r.try_get("iccid"))
    .transpose()?)
}

/// Whether the operator has imported profiles of this type.
pub async fn type_known<C: GenericClient + Sync>(
    c: &C,
    profile_type: &str,
    operator: &str,
) -> Result<bool, PgError> {
    Ok(c.query_opt(
        &c.prepare_cached("SELECT 1 FROM profile_types WHERE profile_type = $1 AND operator = $2")
            .await?,
        &[&profile_type, &operator],
    )
    .await?
    .is_some())
}

// ---------------------------------------------------------------------
// Profiles outside commands.
// ---------------------------------------------------------------------

const INSERT_PROFILES: &str = "INSERT INTO profiles (iccid, operator, profile_type, state, \
     created_at, updated_at, history_len, imported_by, package) \
     SELECT i, o, t, 'Available', $4, $4, 1, $5, p \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $6::bytea[]) AS u (i, o, t, p) \
     ON CONFLICT (iccid) DO NOTHING RETURNING iccid";

const INSERT_TYPES: &str = "INSERT INTO profile_types (profile_type, operator) \
     SELECT t, o FROM UNNEST($1::text[], $2::text[]) AS u (t, o) ON CONFLICT DO NOTHING";

/// Adds profiles to the inventory, Available, imported by `caller` at
/// `now` (the import is history entry 0, carried by the row as in the sled
/// store: `history_len` 1, `imported_by`), and their profile types. In
/// statements of at most [`INSERT_BATCH`] rows and [`INSERT_BATCH_BYTES`]
/// of packages. `Ok(Err(iccid))`: the first item, in order, that was not
/// inserted because its ICCID is already in the inventory (or earlier in
/// `items`); the rows of earlier statements stay written, so the caller
/// runs this in one transaction and rolls it back then. The caller has
/// checked the items (Luhn digit, labels, duplicates) as the sled store's
/// import does. An import running at the same time with one of these
/// ICCIDs is waited for: whichever commits first has it.
pub async fn insert_profiles<C: GenericClient + Sync>(
    c: &C,
    items: &[NewProfile],
    caller: &str,
    now: i64,
) -> Result<Result<usize, String>, PgError> {
    for batch in batches(items) {
        let iccids: Vec<&str> = batch.iter().map(|p| p.iccid.as_str()).collect();
        let operators: Vec<&str> = batch.iter().map(|p| p.operator.as_str()).collect();
        let types: Vec<&str> = batch.iter().map(|p| p.profile_type.as_str()).collect();
        let packages: Vec<&[u8]> = batch.iter().map(|p| p.package.as_slice()).collect();
        let inserted = c
            .query(
                INSERT_PROFILES,
                &[&iccids, &operators, &types, &now, &caller, &packages],
            )
            .await?;
        if inserted.len() != batch.len() {
            let inserted: HashSet<String> = rows::iccids(&inserted)?.into_iter().collect();
            let mut seen = HashSet::new();
            let first = iccids
                .iter()
                .find(|i| !seen.insert(**i) || !inserted.contains(**i))
                .map(|i| i.to_string())
                .unwrap_or_default();
            return Ok(Err(first));
        }
    }
    let pairs: BTreeSet<(&str, &str)> = items
        .iter()
        .map(|p| (p.profile_type.as_str(), p.operator.as_str()))
        .collect();
    let (types, operators): (Vec<&str>, Vec<&str>) = pairs.into_iter().unzip();
    c.execute(
        &c.prepare_cached(INSERT_TYPES).await?,
        &[&types, &operators],
    )
    .await?;
    Ok(Ok(items.len()))
}

/// `items` cut into the batches of [`insert_profiles`]: consecutive runs
/// of at most [`INSERT_BATCH`] items and [`INSERT_BATCH_BYTES`] of
/// packages, each at least one item.
fn batches(items: &[NewProfile]) -> Vec<&[NewProfile]> {
    let mut out = vec![];
    let (mut start, mut bytes) = (0, 0);
    for (i, p) in items.iter().enumerate() {
        if i > start && (i - start >= INSERT_BATCH || bytes + p.package.len() > INSERT_BATCH_BYTES)
        {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += p.package.len();
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

const GET_PROFILE: &str = concat!(
    "SELECT ",
    profile_columns!(),
    " FROM profiles WHERE iccid = $1"
);

/// One profile.
pub async fn get_profile<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
) -> Result<Option<ProfileRecord>, PgError> {
    c.query_opt(&c.prepare_cached(GET_PROFILE).await?, &[&iccid])
        .await?
        .as_ref()
        .map(rows::profile)
        .transpose()
}

/// The stored (protected) package of a profile.
pub async fn package<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
) -> Result<Option<Vec<u8>>, PgError> {
    Ok(c.query_opt(
        &c.prepare_cached("SELECT package FROM profiles WHERE iccid = $1")
            .await?,
        &[&iccid],
    )
    .await?
    .map(|r| r.try_get("package"))
    .transpose()?)
}

const HISTORY: &str = concat!(
    "SELECT ",
    history_columns!(),
    " FROM profile_history WHERE iccid = $1 ORDER BY seq"
);

/// A profile's stored history entries, in order. The import entry a row
/// carries ([`ProfileRecord::import_entry`]) is not among them: the
/// caller puts it first.
pub async fn history<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
) -> Result<Vec<HistoryEntry>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(HISTORY).await?, &[&iccid])
            .await?,
        rows::history,
    )
}

const LIST: &str = concat!(
    "SELECT ",
    profile_columns!(),
    " FROM profiles WHERE ($1::text IS NULL OR operator = $1) \
     AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR profile_type = $3) \
     ORDER BY iccid LIMIT $4"
);

/// Profiles matching a filter, in ICCID order. A limit of 0 gives one
/// profile at most, as the sled store's listing does.
pub async fn list<C: GenericClient + Sync>(
    c: &C,
    f: &ListFilter,
) -> Result<Vec<ProfileRecord>, PgError> {
    let limit = f
        .limit
        .map_or(i64::MAX, |l| i64::try_from(l.max(1)).unwrap_or(i64::MAX));
    let rows = c
        .query(
            LIST,
            &[
                &f.operator,
                &f.state.map(state_name),
                &f.profile_type,
                &limit,
            ],
        )
        .await?;
    map_rows(rows, rows::profile)
}

/// The ICCID an active MatchingID names (the empty MatchingID names
/// none).
pub async fn by_matching_id<C: GenericClient + Sync>(
    c: &C,
    matching_id: &str,
) -> Result<Option<String>, PgError> {
    if matching_id.is_empty() {
        return Ok(None);
    }
    Ok(c.query_opt(
        &c.prepare_cached(
            "SELECT iccid FROM profiles WHERE matching_id = $1 AND matching_id <> ''",
        )
        .await?,
        &[&matching_id],
    )
    .await?
    .map(|r| r.try_get("iccid"))
    .transpose()?)
}

const PENDING_FOR_EID: &str = concat!(
    "SELECT iccid FROM profiles WHERE eid = $1 AND state IN ",
    pending_states!(),
    " ORDER BY iccid"
);

/// ICCIDs of the open orders linked to an EID (reserved, released or
/// downloaded: [`State::is_pending_order`]), in ICCID order.
pub async fn pending_for_eid<C: GenericClient + Sync>(
    c: &C,
    eid: &str,
) -> Result<Vec<String>, PgError> {
    rows::iccids(
        &c.query(&c.prepare_cached(PENDING_FOR_EID).await?, &[&eid])
            .await?,
    )
}

const PENDING_RECORDS_FOR_EID: &str = concat!(
    "SELECT ",
    profile_columns!(),
    " FROM profiles WHERE eid = $1 AND state IN ",
    pending_states!(),
    " ORDER BY iccid"
);

/// The records of the open orders linked to an EID, in ICCID order: what
/// [`pending_for_eid`] names, in one round trip.
pub async fn pending_records_for_eid<C: GenericClient + Sync>(
    c: &C,
    eid: &str,
) -> Result<Vec<ProfileRecord>, PgError> {
    c.query(&c.prepare_cached(PENDING_RECORDS_FOR_EID).await?, &[&eid])
        .await?
        .iter()
        .map(rows::profile)
        .collect()
}

/// ICCIDs in the available pool of (operator, type), in ICCID order.
pub async fn pool<C: GenericClient + Sync>(
    c: &C,
    operator: &str,
    profile_type: &str,
) -> Result<Vec<String>, PgError> {
    rows::iccids(
        &c.query(
            &c.prepare_cached(
                "SELECT iccid FROM profiles WHERE operator = $1 AND profile_type = $2 \
             AND state = 'Available' ORDER BY iccid",
            )
            .await?,
            &[&operator, &profile_type],
        )
        .await?,
    )
}

const DUE_EXPIRIES: &str = concat!(
    "SELECT iccid FROM profiles WHERE expires_at IS NOT NULL AND expires_at <= $1 \
     AND state IN ",
    expiring_states!(),
    " ORDER BY expires_at, iccid"
);

/// Orders that can expire ([`State::can_expire`]) whose expiry is at or
/// before `now`, earliest first.
pub async fn due_expiries<C: GenericClient + Sync>(
    c: &C,
    now: i64,
) -> Result<Vec<String>, PgError> {
    rows::iccids(
        &c.query(&c.prepare_cached(DUE_EXPIRIES).await?, &[&now])
            .await?,
    )
}

/// The first stored ICCID of the same length as `first` and `last` that
/// lies between them (inclusive), if any: whether a block of consecutive
/// ICCIDs is still free.
pub async fn first_taken_in<C: GenericClient + Sync>(
    c: &C,
    first: &str,
    last: &str,
) -> Result<Option<String>, PgError> {
    let width = i64::try_from(first.len()).unwrap_or(i64::MAX);
    Ok(c.query_opt(
        &c.prepare_cached(
            "SELECT iccid FROM profiles WHERE iccid >= $1 AND iccid <= $2 \
         AND length(iccid) = $3::bigint ORDER BY iccid LIMIT 1",
        )
        .await?,
        &[&first, &last, &width],
    )
    .await?
    .map(|r| r.try_get("iccid"))
    .transpose()?)
}

/// The stored answer to an ES2+ call, for an idempotent re-send.
pub async fn idempotent_response<C: GenericClient + Sync>(
    c: &C,
    key: &[u8; 32],
) -> Result<Option<Vec<u8>>, PgError> {
    Ok(c.query_opt(
        &c.prepare_cached("SELECT response FROM idempotency WHERE key = $1")
            .await?,
        &[&key.as_slice()],
    )
    .await?
    .map(|r| r.try_get("response"))
    .transpose()?)
}

/// Drops the idempotency records older than `cutoff` (Unix seconds; the
/// `expires_at` column holds the record's time). How many.
pub async fn prune_idempotency<C: GenericClient + Sync>(
    c: &C,
    cutoff: i64,
) -> Result<usize, PgError> {
    delete_in_batches(
        c,
        "DELETE FROM idempotency WHERE key IN \
         (SELECT key FROM idempotency WHERE expires_at < $1 LIMIT $2)",
        cutoff,
    )
    .await
}

/// Stored packages in ICCID order after `after` (from the first when
/// `None`), at most `limit`: one page of the key rotation's pass.
pub async fn packages_after<C: GenericClient + Sync>(
    c: &C,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, PgError> {
    // Every ICCID sorts after the empty string.
    let after = after.unwrap_or("");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c
        .query(
            "SELECT iccid, package FROM profiles WHERE iccid > $1 ORDER BY iccid LIMIT $2",
            &[&after, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("iccid")?, r.try_get("package")?)))
        .collect()
}

/// Replaces a stored package if it is still `old` (compare-and-swap, so
/// that a rewrite runs beside live traffic). Whether it was replaced.
pub async fn swap_package<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
    old: &[u8],
    new: &[u8],
) -> Result<bool, PgError> {
    Ok(c.execute(
        &c.prepare_cached("UPDATE profiles SET package = $3 WHERE iccid = $1 AND package = $2")
            .await?,
        &[&iccid, &old, &new],
    )
    .await?
        == 1)
}

/// How many packages are stored (one per profile).
pub async fn package_count<C: GenericClient + Sync>(c: &C) -> Result<usize, PgError> {
    let n: i64 = c
        .query_one("SELECT count(*) FROM profiles", &[])
        .await?
        .try_get(0)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

// ---------------------------------------------------------------------
// ES9+ RSP sessions (SGP.22 §3.1.1.4, §5.6).
// ---------------------------------------------------------------------

const COUNT_SESSIONS_UPTO: &str =
    "SELECT count(*) FROM (SELECT 1 FROM rsp_sessions LIMIT $1) AS live";

const EVICT_PENDING: &str = "DELETE FROM rsp_sessions WHERE transaction_id IN \
     (SELECT transaction_id FROM rsp_sessions WHERE phase = 'pending' \
      ORDER BY expires_at, transaction_id LIMIT $1 FOR UPDATE SKIP LOCKED)";

const INSERT_SESSION: &str = "INSERT INTO rsp_sessions \
     (transaction_id, phase, created_at, expires_at, state) VALUES ($1, 'pending', $2, $3, $4) \
     ON CONFLICT (transaction_id) DO UPDATE SET phase = 'pending', \
     created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, state = EXCLUDED.state";

/// Stores a new, pending session until `expires_at` (ES9+.
/// InitiateAuthentication), created at `now`. With `max_sessions` > 0 and
/// that many live (expired ones count until swept), the oldest pending
/// sessions are removed to make room (pending sessions share one time to
/// live, so the earliest expiry is the oldest), as many as the cap needs
/// and at most [`MAX_EVICTIONS_PER_CREATE`]; an authenticated session is
/// never evicted. When none can be evicted, nothing is stored:
/// [`Admission::Full`].
///
/// The count and the evictions are not one atomic step across nodes (the
/// sled store's lock is per process): nodes creating sessions at the same
/// moment may each see room, so the cap holds approximately, by at most
/// the number of concurrent creations. Evictions skip the rows another
/// creation is evicting, so two never wait on each other.
pub async fn create_session<C: GenericClient + Sync>(
    c: &C,
    transaction_id: &[u8],
    expires_at: i64,
    session: &[u8],
    max_sessions: u64,
    now: i64,
) -> Result<Admission, PgError> {
    let mut evicted = 0;
    if max_sessions > 0 {
        // Counting beyond the cap plus the evictions one creation may do
        // tells nothing more: the count stops there.
        let upto = i64::try_from(max_sessions.saturating_add(MAX_EVICTIONS_PER_CREATE))
            .unwrap_or(i64::MAX);
        let live: i64 = c
            .query_one(COUNT_SESSIONS_UPTO, &[&upto])
            .await?
            .try_get(0)?;
        let live = ubig(live, "session count")?;
        if live >= max_sessions {
            let need = (live + 1 - max_sessions).min(MAX_EVICTIONS_PER_CREATE);
            evicted = c
                .execute(EVICT_PENDING, &[&bigint(need, "evictions")?])
                .await?;
            if evicted == 0 {
                return Ok(Admission::Full);
            }
        }
    }
    c.execute(
        &c.prepare_cached(INSERT_SESSION).await?,
        &[&transaction_id, &now, &expires_at, &session],
    )
    .await?;
    Ok(Admission::Created { evicted })
}

/// Replaces a session with its next phase, authenticated, until
/// `expires_at` (ES9+.AuthenticateClient and GetBoundProfilePackage).
/// False, and nothing stored, when the session is gone (expired and
/// swept, evicted or ended).
pub async fn update_session<C: GenericClient + Sync>(
    c: &C,
    transaction_id: &[u8],
    expires_at: i64,
    session: &[u8],
) -> Result<bool, PgError> {
    Ok(c.execute(
        &c.prepare_cached(
            "UPDATE rsp_sessions SET phase = 'authenticated', expires_at = $2, state = $3 \
         WHERE transaction_id = $1",
        )
        .await?,
        &[&transaction_id, &expires_at, &session],
    )
    .await?
        == 1)
}

/// A session that has not expired at `now`.
pub async fn get_session<C: GenericClient + Sync>(
    c: &C,
    transaction_id: &[u8],
    now: i64,
) -> Result<Option<Vec<u8>>, PgError> {
    Ok(c.query_opt(
        &c.prepare_cached(
            "SELECT state FROM rsp_sessions WHERE transaction_id = $1 AND expires_at > $2",
        )
        .await?,
        &[&transaction_id, &now],
    )
    .await?
    .map(|r| r.try_get("state"))
    .transpose()?)
}

/// Whether a transactionId was issued and is still remembered (expired or
/// not, until swept).
pub async fn session_exists<C: GenericClient + Sync>(
    c: &C,
    transaction_id: &[u8],
) -> Result<bool, PgError> {
    Ok(c.query_opt(
        &c.prepare_cached("SELECT 1 FROM rsp_sessions WHERE transaction_id = $1")
            .await?,
        &[&transaction_id],
    )
    .await?
    .is_some())
}

/// Ends a session. Whether it was there.
pub async fn remove_session<C: GenericClient + Sync>(
    c: &C,
    transaction_id: &[u8],
) -> Result<bool, PgError> {
    Ok(c.execute(
        &c.prepare_cached("DELETE FROM rsp_sessions WHERE transaction_id = $1")
            .await?,
        &[&transaction_id],
    )
    .await?
        == 1)
}

/// Removes the sessions, pending and authenticated, that expired before
/// `now`. How many.
pub async fn sweep_sessions<C: GenericClient + Sync>(c: &C, now: i64) -> Result<usize, PgError> {
    delete_in_batches(
        c,
        "DELETE FROM rsp_sessions WHERE transaction_id IN \
         (SELECT transaction_id FROM rsp_sessions WHERE expires_at < $1 LIMIT $2)",
        now,
    )
    .await
}

/// Stored sessions by phase (expired ones count until swept).
pub async fn session_counts<C: GenericClient + Sync>(c: &C) -> Result<SessionCounts, PgError> {
    let mut counts = SessionCounts::default();
    for r in c
        .query(
            "SELECT phase, count(*) AS n FROM rsp_sessions GROUP BY phase",
            &[],
        )
        .await?
    {
        let phase: &str = r.try_get("phase")?;
        let n = ubig(r.try_get("n")?, "session count")?;
        match phase {
            PENDING => counts.pending = n,
            AUTHENTICATED => counts.authenticated = n,
            other => return Err(PgError::Data(format!("unknown session phase {other:?}"))),
        }
    }
    Ok(counts)
}

// ---------------------------------------------------------------------
// The outbox of ES2+ handleDownloadProgressInfo (SGP.22 §5.3.5).
// ---------------------------------------------------------------------

const OUTBOX_ALL: &str = concat!("SELECT ", outbox_columns!(), " FROM outbox ORDER BY id");

/// Every outbox item, oldest first (the listing of the CLI and the admin
/// API), leased or not.
pub async fn outbox_all<C: GenericClient + Sync>(c: &C) -> Result<Vec<OutboxItem>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(OUTBOX_ALL).await?, &[]).await?,
        rows::outbox,
    )
}

const OUTBOX_CLAIM: &str = concat!(
    "UPDATE outbox SET leased_by = $4, leased_until = $5 WHERE id IN \
     (SELECT id FROM outbox WHERE operator = $1 AND next_attempt_ms <= $2 \
      AND (leased_until IS NULL OR leased_until <= $2) \
      ORDER BY next_attempt_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING ",
    outbox_columns!()
);

const OUTBOX_NEXT_DUE: &str = "SELECT min(CASE WHEN leased_until IS NOT NULL \
     AND leased_until > $3 AND leased_until > next_attempt_ms THEN leased_until \
     ELSE next_attempt_ms END) \
     FROM outbox WHERE operator = $1 AND NOT (id = ANY($2))";

/// Claims `operator`'s items due at `now_ms` for delivery by `node`, at
/// most `limit`, earliest due first: each one is leased to `node` for
/// `lease_ms` milliseconds, during which no other node claims it. Items
/// leased by another node are skipped; a lease that ran out (its node died
/// or stalled) is free again, so an item is never lost, at worst delivered
/// twice (the operator recognises a redelivery by its
/// functionCallIdentifier, the item id). The delivery ends the lease:
/// [`remove_outbox`] when delivered, [`put_outbox`] after a failed attempt.
///
/// Also returns when the operator's next item is due among the rest (its
/// next attempt, or the end of a lease running at `now_ms` when that is
/// later; already due
/// when `limit` cut the list), for the worker's sleep.
///
/// Run it in a transaction of its own (or on a connection, autocommit):
/// the lease is what holds the items once it commits.
pub async fn outbox_claim_due<C: GenericClient + Sync>(
    c: &C,
    operator: &str,
    now_ms: i64,
    limit: usize,
    node: &str,
    lease_ms: i64,
) -> Result<(Vec<OutboxItem>, Option<i64>), PgError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // No lease (0): the items are read, not held (one node alone).
    let (node, until) = match lease_ms {
        0 => (None, None),
        ms => (Some(node), Some(now_ms.saturating_add(ms))),
    };
    let mut items = map_rows(
        c.query(
            &c.prepare_cached(OUTBOX_CLAIM).await?,
            &[&operator, &now_ms, &limit, &node, &until],
        )
        .await?,
        rows::outbox,
    )?;
    items.sort_by_key(|i| (i.next_attempt_ms, i.id));
    let claimed = items
        .iter()
        .map(|i| bigint(i.id, "outbox id"))
        .collect::<Result<Vec<i64>, PgError>>()?;
    let next: Option<i64> = c
        .query_one(OUTBOX_NEXT_DUE, &[&operator, &claimed, &now_ms])
        .await?
        .try_get(0)?;
    Ok((items, next))
}

/// The operators that have outbox items, in name order.
pub async fn outbox_operators<C: GenericClient + Sync>(c: &C) -> Result<Vec<String>, PgError> {
    c.query(
        &c.prepare_cached("SELECT DISTINCT operator FROM outbox ORDER BY operator")
            .await?,
        &[],
    )
    .await?
    .iter()
    .map(|r| Ok(r.try_get("operator")?))
    .collect()
}

const OUTBOX_DEPTHS: &str = "SELECT o.operator, count(*) AS n, \
     (SELECT f.event_at FROM outbox f WHERE f.operator = o.operator ORDER BY f.id LIMIT 1) \
     AS oldest FROM outbox o GROUP BY o.operator ORDER BY o.operator";

/// Outbox items per operator, with the event time (Unix seconds) of each
/// operator's oldest item. Only operators with items are listed.
pub async fn outbox_depths<C: GenericClient + Sync>(
    c: &C,
) -> Result<Vec<(String, i64, Option<i64>)>, PgError> {
    c.query(&c.prepare_cached(OUTBOX_DEPTHS).await?, &[])
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("operator")?,
                r.try_get("n")?,
                r.try_get("oldest")?,
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------
// Bound Profile Packages kept for a retry (SGP.22 §5.6.2, §5.6.3).
// ---------------------------------------------------------------------

const KEPT: &str = concat!(
    "SELECT ",
    kept_columns!(),
    " FROM kept_packages WHERE iccid = $1"
);

/// The package kept for a retry of this order, if any and not expired at
/// `now`. An expired one is removed (unless it was replaced meanwhile by
/// one that has not expired).
pub async fn kept_package<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
    now: i64,
) -> Result<Option<KeptPackage>, PgError> {
    let Some(kept) = c
        .query_opt(KEPT, &[&iccid])
        .await?
        .as_ref()
        .map(rows::kept)
        .transpose()?
    else {
        return Ok(None);
    };
    if kept.expires_at > now {
        return Ok(Some(kept));
    }
    c.execute(
        &c.prepare_cached("DELETE FROM kept_packages WHERE iccid = $1 AND expires_at <= $2")
            .await?,
        &[&iccid, &now],
    )
    .await?;
    Ok(None)
}

/// Removes every kept package expired at `now`. How many.
pub async fn sweep_kept<C: GenericClient + Sync>(c: &C, now: i64) -> Result<usize, PgError> {
    delete_in_batches(
        c,
        "DELETE FROM kept_packages WHERE iccid IN \
         (SELECT iccid FROM kept_packages WHERE expires_at <= $1 LIMIT $2)",
        now,
    )
    .await
}

/// Whether a package is kept for this order (expired or not).
pub async fn has_kept<C: GenericClient + Sync>(c: &C, iccid: &str) -> Result<bool, PgError> {
    Ok(c.query_opt(
        &c.prepare_cached("SELECT 1 FROM kept_packages WHERE iccid = $1")
            .await?,
        &[&iccid],
    )
    .await?
    .is_some())
}

// ---------------------------------------------------------------------
// GetBalance transaction ids, balances.
// ---------------------------------------------------------------------

/// Forgets the GetBalance transaction ids used before `cutoff`, then the
/// oldest beyond `max` (oldest by use, then by id). How many were
/// forgotten.
pub async fn prune_uses<C: GenericClient + Sync>(
    c: &C,
    cutoff: i64,
    max: usize,
) -> Result<usize, PgError> {
    let old = delete_in_batches(
        c,
        "DELETE FROM balance_transaction_ids WHERE id IN \
         (SELECT id FROM balance_transaction_ids WHERE at < $1 LIMIT $2)",
        cutoff,
    )
    .await?;
    let left: i64 = c
        .query_one("SELECT count(*) FROM balance_transaction_ids", &[])
        .await?
        .try_get(0)?;
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let mut excess = left.saturating_sub(max);
    let mut n = old;
    while excess > 0 {
        let removed = c
            .execute(
                "DELETE FROM balance_transaction_ids WHERE id IN \
                 (SELECT id FROM balance_transaction_ids ORDER BY at, id LIMIT $1)",
                &[&excess.min(DELETE_BATCH)],
            )
            .await?;
        if removed == 0 {
            break;
        }
        n += count(removed);
        excess -= i64::try_from(removed).unwrap_or(excess);
    }
    Ok(n)
}

const BALANCE: &str = concat!(
    "SELECT ",
    balance_columns!(),
    " FROM balances WHERE iccid = $1"
);

/// A SIM's balance record ([MP-Account]).
pub async fn balance<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
) -> Result<Option<BalanceRecord>, PgError> {
    c.query_opt(&c.prepare_cached(BALANCE).await?, &[&iccid])
        .await?
        .as_ref()
        .map(rows::balance)
        .transpose()
}

/// Whether the ICCID names a registered SIM or a profile.
pub async fn sim_known<C: GenericClient + Sync>(c: &C, iccid: &str) -> Result<bool, PgError> {
    Ok(c.query_one(
        &c.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM balances WHERE iccid = $1) \
         OR EXISTS (SELECT 1 FROM profiles WHERE iccid = $1)",
        )
        .await?,
        &[&iccid],
    )
    .await?
    .try_get(0)?)
}

// ---------------------------------------------------------------------
// Windows Mobile Plans orders.
// ---------------------------------------------------------------------

const MP_ORDER: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM mobileplans_orders WHERE id = $1"
);

/// One order.
pub async fn mp_order<C: GenericClient + Sync>(
    c: &C,
    id: u64,
) -> Result<Option<MobilePlansOrder>, PgError> {
    c.query_opt(
        &c.prepare_cached(MP_ORDER).await?,
        &[&bigint(id, "order id")?],
    )
    .await?
    .as_ref()
    .map(rows::order)
    .transpose()
}

const MP_BY_TRANSACTION: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM mobileplans_orders WHERE transaction_id = $1"
);

/// The order of a Mobile Plans transactionId.
pub async fn mp_order_by_transaction<C: GenericClient + Sync>(
    c: &C,
    transaction_id: &str,
) -> Result<Option<MobilePlansOrder>, PgError> {
    c.query_opt(
        &c.prepare_cached(MP_BY_TRANSACTION).await?,
        &[&transaction_id],
    )
    .await?
    .as_ref()
    .map(rows::order)
    .transpose()
}

const MP_LATEST_FOR_ICCID: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM mobileplans_orders WHERE iccid = $1 ORDER BY id DESC LIMIT 1"
);

/// The latest order of a line.
pub async fn mp_latest_for_iccid<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
) -> Result<Option<MobilePlansOrder>, PgError> {
    c.query_opt(&c.prepare_cached(MP_LATEST_FOR_ICCID).await?, &[&iccid])
        .await?
        .as_ref()
        .map(rows::order)
        .transpose()
}

const MP_LATEST_FOR_EID: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM mobileplans_orders WHERE eid = $1 ORDER BY id DESC LIMIT 1"
);

/// The latest order of an eUICC.
pub async fn mp_latest_for_eid<C: GenericClient + Sync>(
    c: &C,
    eid: &str,
) -> Result<Option<MobilePlansOrder>, PgError> {
    c.query_opt(&c.prepare_cached(MP_LATEST_FOR_EID).await?, &[&eid])
        .await?
        .as_ref()
        .map(rows::order)
        .transpose()
}

const MP_ORDERS_FOR_ICCID: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM mobileplans_orders WHERE iccid = $1 ORDER BY id"
);

/// The orders of a line, oldest first.
pub async fn mp_orders_for_iccid<C: GenericClient + Sync>(
    c: &C,
    iccid: &str,
) -> Result<Vec<MobilePlansOrder>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(MP_ORDERS_FOR_ICCID).await?, &[&iccid])
            .await?,
        rows::order,
    )
}

const MP_ORDERS_FOR_EID: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM mobileplans_orders WHERE eid = $1 ORDER BY id"
);

/// The orders of an eUICC, oldest first.
pub async fn mp_orders_for_eid<C: GenericClient + Sync>(
    c: &C,
    eid: &str,
) -> Result<Vec<MobilePlansOrder>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(MP_ORDERS_FOR_EID).await?, &[&eid])
            .await?,
        rows::order,
    )
}

const MP_ORDERS: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM mobileplans_orders ORDER BY id"
);

/// Every order, oldest first.
pub async fn mp_orders<C: GenericClient + Sync>(c: &C) -> Result<Vec<MobilePlansOrder>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(MP_ORDERS).await?, &[]).await?,
        rows::order,
    )
}

const MP_DUE_RELEASES: &str = concat!(
    "SELECT id FROM mobileplans_orders WHERE ",
    release_pending!(),
    " AND release_at <= $1 ORDER BY release_at, id"
);

const MP_DUE_HOLDS: &str = concat!(
    "SELECT id FROM mobileplans_orders WHERE ",
    hold_pending!(),
    " AND hold_until <= $1 ORDER BY hold_until, id"
);

/// The ids of rows whose `id` column is an order id.
fn order_ids(rows: &[tokio_postgres::Row]) -> Result<Vec<u64>, PgError> {
    rows.iter()
        .map(|r| ubig(r.try_get("id")?, "order id"))
        .collect()
}

/// Orders whose scheduled release ([MP-Callbacks], delayed download) is
/// still to do and due at `now`, earliest first.
pub async fn mp_due_releases<C: GenericClient + Sync>(
    c: &C,
    now: i64,
) -> Result<Vec<u64>, PgError> {
    order_ids(
        &c.query(&c.prepare_cached(MP_DUE_RELEASES).await?, &[&now])
            .await?,
    )
}

/// Held portal orders, still unconfirmed, whose hold ran out at or before
/// `now`, earliest first.
pub async fn mp_due_holds<C: GenericClient + Sync>(c: &C, now: i64) -> Result<Vec<u64>, PgError> {
    order_ids(
        &c.query(&c.prepare_cached(MP_DUE_HOLDS).await?, &[&now])
            .await?,
    )
}

// ---------------------------------------------------------------------
// Metrics.
// ---------------------------------------------------------------------

/// Profiles per lifecycle state, every state listed (zero included), in
/// lifecycle order.
pub async fn counts_by_state<C: GenericClient + Sync>(c: &C) -> Result<Vec<(State, i64)>, PgError> {
    let mut counts: Vec<(State, i64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
    for r in c
        .query(
            "SELECT state, count(*) AS n FROM profiles GROUP BY state",
            &[],
        )
        .await?
    {
        let state = rows::parse_state(r.try_get("state")?)?;
        let n: i64 = r.try_get("n")?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = n;
        }
    }
    Ok(counts)
}

const AVAILABLE_BY_POOL: &str = "SELECT t.operator, t.profile_type, count(p.iccid) AS n \
     FROM profile_types t LEFT JOIN profiles p ON p.operator = t.operator \
     AND p.profile_type = t.profile_type AND p.state = 'Available' \
     GROUP BY t.operator, t.profile_type ORDER BY t.operator, t.profile_type";

/// Available profiles per (operator, profile type), for every pool ever
/// imported: a pool that ran dry shows 0, which is what an operator
/// alerts on.
pub async fn available_by_pool<C: GenericClient + Sync>(
    c: &C,
) -> Result<Vec<((String, String), i64)>, PgError> {
    c.query(&c.prepare_cached(AVAILABLE_BY_POOL).await?, &[])
        .await?
        .iter()
        .map(|r| {
            Ok((
                (r.try_get("operator")?, r.try_get("profile_type")?),
                r.try_get("n")?,
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------
// Copying a whole store in (store::migrate): whole records, inserted
// only where nothing holds their key or another of their unique values
// (`ON CONFLICT DO NOTHING`), so a copy never overwrites and can run
// again; the reads by key it compares with; and the scans in key order
// it digests.
// ---------------------------------------------------------------------

const IMPORT_PROFILE: &str = "INSERT INTO profiles (iccid, operator, profile_type, state, eid, \
     matching_id, cc_hashes, smds_address, download_attempts, cc_attempts, expires_at, \
     created_at, updated_at, history_len, error_reason, imported_by, package) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::int4, $10::int4, $11, $12, $13, $14, $15, $16, \
     $17) ON CONFLICT DO NOTHING";

/// Inserts a whole profile record with its stored package (the bytes as
/// given). Whether it was inserted.
pub async fn import_profile(
    c: &Tx<'_>,
    r: &ProfileRecord,
    package: &[u8],
) -> Result<bool, PgError> {
    let n = c
        .execute(
            &c.prepare_cached(IMPORT_PROFILE).await?,
            &[
                &r.iccid,
                &r.operator,
                &r.profile_type,
                &state_name(r.state),
                &r.eid,
                &r.matching_id,
                &r.cc_hashes,
                &r.smds_address,
                &int(r.download_attempts, "download_attempts")?,
                &int(r.cc_attempts, "cc_attempts")?,
                &r.expires_at,
                &r.created_at,
                &r.updated_at,
                &bigint(r.history_len, "history_len")?,
                &r.error_reason,
                &r.imported_by,
                &package,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Inserts history entry `seq` of a profile. Whether it was inserted.
pub async fn import_history(
    c: &Tx<'_>,
    iccid: &str,
    seq: u64,
    entry: &HistoryEntry,
) -> Result<bool, PgError> {
    let n = c
        .execute(
            &c.prepare_cached(concat!(
                "INSERT INTO profile_history (iccid, seq, at, event, from_state, to_state, ",
                "caller, retry) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
            ))
            .await?,
            &[
                &iccid,
                &bigint(seq, "history seq")?,
                &entry.at,
                &rows::event_name(entry.event)?,
                &entry.from.map(state_name),
                &state_name(entry.to),
                &entry.caller,
                &entry.retry.map(|r| r.as_str()),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Inserts the package kept for a retry of `iccid`. Whether it was
/// inserted.
pub async fn import_kept(c: &Tx<'_>, iccid: &str, p: &KeptPackage) -> Result<bool, PgError> {
    let n = c
        .execute(
            &c.prepare_cached(concat!(
                "INSERT INTO kept_packages (iccid, eid, dp_ci, euicc_otpk, metadata, bpp, ",
                "expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
            ))
            .await?,
            &[
                &iccid,
                &p.eid,
                &p.dp_ci,
                &p.euicc_otpk,
                &p.metadata,
                &p.bpp,
                &p.expires_at,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Inserts a known (profile type, operator). Whether it was inserted.
pub async fn import_profile_type(
    c: &Tx<'_>,
    profile_type: &str,
    operator: &str,
) -> Result<bool, PgError> {
    let n = c
        .execute(
            &c.prepare_cached(
                "INSERT INTO profile_types (profile_type, operator) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
            )
            .await?,
            &[&profile_type, &operator],
        )
        .await?;
    Ok(n == 1)
}

/// Inserts an outbox item under its id, free of any lease. Whether it was
/// inserted.
pub async fn import_outbox(c: &Tx<'_>, item: &OutboxItem) -> Result<bool, PgError> {
    let (status, subject, reason, message) = point_status(&item.status);
    let n = c
        .execute(
            &c.prepare_cached(
                "INSERT INTO outbox (id, operator, eid, iccid, profile_type, event_at, point, \
             status, failed_subject, failed_reason, failed_message, result_data, attempts, \
             next_attempt_ms, last_error) VALUES ($1, $2, $3, $4, $5, $6, $7::int4, $8, $9, \
             $10, $11, $12, $13::int4, $14, $15) ON CONFLICT DO NOTHING",
            )
            .await?,
            &[
                &bigint(item.id, "outbox id")?,
                &item.operator,
                &item.eid,
                &item.iccid,
                &item.profile_type,
                &item.timestamp,
                &int(item.point, "point")?,
                &status,
                &subject,
                &reason,
                &message,
                &item.result_data,
                &int(item.attempts, "attempts")?,
                &item.next_attempt_ms,
                &item.last_error,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Inserts an idempotency record (its time is also the one pruning
/// compares, as [`put_idempotency`] writes it). Whether it was inserted.
pub async fn import_idempotency(
    c: &Tx<'_>,
    key: &[u8; 32],
    record: &IdemRecord,
) -> Result<bool, PgError> {
    let n = c
        .execute(
            &c.prepare_cached(
                "INSERT INTO idempotency (key, at, expires_at, response) VALUES ($1, $2, $2, $3) \
             ON CONFLICT DO NOTHING",
            )
            .await?,
            &[&key.as_slice(), &record.at, &record.response],
        )
        .await?;
    Ok(n == 1)
}

/// Inserts a SIM's balance record. Whether it was inserted.
pub async fn import_balance(c: &Tx<'_>, record: &BalanceRecord) -> Result<bool, PgError> {
    let n = c
        .execute(
            &c.prepare_cached(concat!(
                "INSERT INTO balances (iccid, operator, not_supported, buckets, next_bucket, ",
                "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ",
                "ON CONFLICT DO NOTHING"
            ))
            .await?,
            &[
                &record.iccid,
                &record.operator,
                &record.not_supported,
                &Json(&record.buckets),
                &bigint(record.next_bucket, "next_bucket")?,
                &record.created_at,
                &record.updated_at,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Inserts a GetBalance transaction id's last use. Whether it was
/// inserted.
pub async fn import_use(c: &Tx<'_>, id: &str, at: i64) -> Result<bool, PgError> {
    let n = c
        .execute(
            &c.prepare_cached("INSERT INTO balance_transaction_ids (id, at) VALUES ($1, $2) ON CONFLICT DO NOTHING").await?,
            &[&id, &at],
        )
        .await?;
    Ok(n == 1)
}

const IMPORT_ORDER: &str = concat!(
    "INSERT INTO mobileplans_orders (",
    order_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8::int4, $9, $10, $11, $12, $13, $14, $15, $16, \
     $17, $18, $19, $20, $21, $22) ON CONFLICT DO NOTHING"
);

/// Inserts a Mobile Plans order under its id. Whether it was inserted.
pub async fn import_order(c: &Tx<'_>, o: &MobilePlansOrder) -> Result<bool, PgError> {
    let n = c
        .execute(
            &c.prepare_cached(IMPORT_ORDER).await?,
            &[
                &bigint(o.id, "order id")?,
                &o.transaction_id,
                &o.operator,
                &rows::kind_name(o.kind),
                &o.eid,
                &o.iccid,
                &o.matching_id,
                &registration_minutes(o.registration)?,
                &o.release_at,
                &o.released_at,
                &o.release_error,
                &o.status.as_str(),
                &o.status_at,
                &o.metadata.user_account.as_str(),
                &o.metadata.purchase_instrument.as_str(),
                &o.metadata.line.as_str(),
                &o.metadata.plan_name,
                &o.bucket,
                &o.created_at,
                &o.updated_at,
                &o.hold_until,
                &o.confirmed_at,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Moves the id sequence of outbox items and Mobile Plans orders so that
/// the next id is above `above` (never back).
pub async fn raise_record_ids<C: GenericClient + Sync>(c: &C, above: u64) -> Result<(), PgError> {
    let above = bigint(above, "record id")?;
    if above < 1 {
        return Ok(());
    }
    c.execute(
        &c.prepare_cached(
            "SELECT setval('record_ids', GREATEST($1::bigint, \
         (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM record_ids), 1))",
        )
        .await?,
        &[&above],
    )
    .await?;
    Ok(())
}

const PROFILES_BY_ICCIDS: &str = concat!(
    "SELECT ",
    profile_columns!(),
    ", package FROM profiles WHERE iccid = ANY($1)"
);

/// The profiles (with their packages) among `iccids`.
pub async fn profiles_by_iccids<C: GenericClient + Sync>(
    c: &C,
    iccids: &[String],
) -> Result<Vec<(ProfileRecord, Vec<u8>)>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(PROFILES_BY_ICCIDS).await?, &[&iccids])
            .await?,
        |r| Ok((rows::profile(r)?, r.try_get("package")?)),
    )
}

const HISTORY_BY_ICCIDS: &str = concat!(
    "SELECT iccid, seq, ",
    history_columns!(),
    " FROM profile_history WHERE iccid = ANY($1) ORDER BY iccid, seq"
);

/// The history entries of the profiles among `iccids`: (ICCID, seq, entry).
pub async fn history_by_iccids<C: GenericClient + Sync>(
    c: &C,
    iccids: &[String],
) -> Result<Vec<(String, u64, HistoryEntry)>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(HISTORY_BY_ICCIDS).await?, &[&iccids])
            .await?,
        |r| {
            Ok((
                r.try_get("iccid")?,
                ubig(r.try_get("seq")?, "history seq")?,
                rows::history(r)?,
            ))
        },
    )
}

const KEPT_BY_ICCIDS: &str = concat!(
    "SELECT iccid, ",
    kept_columns!(),
    " FROM kept_packages WHERE iccid = ANY($1)"
);

/// The kept packages (expired or not) of the profiles among `iccids`.
pub async fn kept_by_iccids<C: GenericClient + Sync>(
    c: &C,
    iccids: &[String],
) -> Result<Vec<(String, KeptPackage)>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(KEPT_BY_ICCIDS).await?, &[&iccids])
            .await?,
        |r| Ok((r.try_get("iccid")?, rows::kept(r)?)),
    )
}

/// The (profile type, operator) pairs among those given.
pub async fn profile_types_in<C: GenericClient + Sync>(
    c: &C,
    types: &[String],
    operators: &[String],
) -> Result<Vec<(String, String)>, PgError> {
    map_rows(
        c.query(
            &c.prepare_cached(
                "SELECT t.profile_type, t.operator FROM profile_types t \
             JOIN UNNEST($1::text[], $2::text[]) AS u (pt, op) \
             ON t.profile_type = u.pt AND t.operator = u.op",
            )
            .await?,
            &[&types, &operators],
        )
        .await?,
        |r| Ok((r.try_get("profile_type")?, r.try_get("operator")?)),
    )
}

const OUTBOX_BY_IDS: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM outbox WHERE id = ANY($1)"
);

/// The outbox items among `ids`.
pub async fn outbox_by_ids<C: GenericClient + Sync>(
    c: &C,
    ids: &[i64],
) -> Result<Vec<OutboxItem>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(OUTBOX_BY_IDS).await?, &[&ids])
            .await?,
        rows::outbox,
    )
}

/// The idempotency records among `keys`.
pub async fn idempotency_by_keys<C: GenericClient + Sync>(
    c: &C,
    keys: &[Vec<u8>],
) -> Result<Vec<([u8; 32], IdemRecord)>, PgError> {
    map_rows(
        c.query(
            &c.prepare_cached("SELECT key, at, response FROM idempotency WHERE key = ANY($1)")
                .await?,
            &[&keys],
        )
        .await?,
        rows::idempotency,
    )
}

const BALANCES_BY_ICCIDS: &str = concat!(
    "SELECT ",
    balance_columns!(),
    " FROM balances WHERE iccid = ANY($1)"
);

/// The balance records among `iccids`.
pub async fn balances_by_iccids<C: GenericClient + Sync>(
    c: &C,
    iccids: &[String],
) -> Result<Vec<BalanceRecord>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(BALANCES_BY_ICCIDS).await?, &[&iccids])
            .await?,
        rows::balance,
    )
}

/// The GetBalance transaction ids among `ids`, with their last use.
pub async fn uses_by_ids<C: GenericClient + Sync>(
    c: &C,
    ids: &[String],
) -> Result<Vec<(String, i64)>, PgError> {
    map_rows(
        c.query(
            &c.prepare_cached("SELECT id, at FROM balance_transaction_ids WHERE id = ANY($1)")
                .await?,
            &[&ids],
        )
        .await?,
        |r| Ok((r.try_get("id")?, r.try_get("at")?)),
    )
}

const ORDERS_BY_IDS: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM mobileplans_orders WHERE id = ANY($1)"
);

/// The Mobile Plans orders among `ids`.
pub async fn orders_by_ids<C: GenericClient + Sync>(
    c: &C,
    ids: &[i64],
) -> Result<Vec<MobilePlansOrder>, PgError> {
    map_rows(
        c.query(&c.prepare_cached(ORDERS_BY_IDS).await?, &[&ids])
            .await?,
        rows::order,
    )
}

/// Every row of a table in the order a store migration digests it (the
/// source's key order: text in byte order, `COLLATE "C"`), with the
/// columns the row mapping of [`rows`] reads.
pub fn scan_query(table: crate::store::migrate::Table) -> &'static str {
    use crate::store::migrate::Table;
    match table {
        Table::Profiles => concat!(
            "SELECT ",
            profile_columns!(),
            ", package FROM profiles ORDER BY iccid COLLATE \"C\""
        ),
        Table::ProfileHistory => concat!(
            "SELECT iccid, seq, ",
            history_columns!(),
            " FROM profile_history ORDER BY iccid COLLATE \"C\", seq"
        ),
        Table::KeptPackages => concat!(
            "SELECT iccid, ",
            kept_columns!(),
            " FROM kept_packages ORDER BY iccid COLLATE \"C\""
        ),
        Table::ProfileTypes => {
            "SELECT profile_type, operator FROM profile_types \
             ORDER BY profile_type COLLATE \"C\", operator COLLATE \"C\""
        }
        Table::Outbox => concat!("SELECT ", outbox_columns!(), " FROM outbox ORDER BY id"),
        Table::Idempotency => "SELECT key, at, response FROM idempotency ORDER BY key",
        Table::Balances => concat!(
            "SELECT ",
            balance_columns!(),
            " FROM balances ORDER BY iccid COLLATE \"C\""
        ),
        Table::BalanceTransactionIds => {
            "SELECT id, at FROM balance_transaction_ids ORDER BY id COLLATE \"C\""
        }
        Table::MobilePlansOrders => concat!(
            "SELECT ",
            order_columns!(),
            " FROM mobileplans_orders ORDER BY id"
        ),
    }
}

/// Runs `sql` (no parameters) in the transaction and hands its rows to
/// `f` in pages of `page` rows, so that a large table is never held whole.
pub async fn scan(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    page: i32,
    f: &mut dyn FnMut(&tokio_postgres::Row) -> Result<(), PgError>,
) -> Result<(), PgError> {
    let portal = tx.bind(sql, &[]).await?;
    loop {
        let rows = tx.query_portal(&portal, page).await?;
        for r in &rows {
            f(r)?;
        }
        if rows.len() < usize::try_from(page).unwrap_or(0) || rows.is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quoted names of the states `keep` selects, as an SQL list.
    fn listed(sql: &str, keep: impl Fn(State) -> bool) {
        for s in State::ALL {
            assert_eq!(
                sql.contains(&format!("'{}'", s.as_str())),
                keep(s),
                "{s} in {sql}"
            );
        }
    }

    #[test]
    fn imports_are_cut_by_rows_and_bytes() {
        let item = |n: usize, size: usize| NewProfile {
            iccid: crate::ids::Iccid::parse(&format!("8944000000{n:09}")).expect("iccid"),
            profile_type: "t".into(),
            operator: "o".into(),
            package: vec![0; size],
        };
        let lens =
            |items: &[NewProfile]| batches(items).iter().map(|b| b.len()).collect::<Vec<_>>();
        assert!(batches(&[]).is_empty());
        let small: Vec<NewProfile> = (0..2 * INSERT_BATCH + 1).map(|n| item(n, 10)).collect();
        assert_eq!(lens(&small), vec![INSERT_BATCH, INSERT_BATCH, 1]);
        let half = INSERT_BATCH_BYTES / 2;
        let big = [
            item(1, half),
            item(2, half),
            item(3, 1),
            item(4, 3 * half),
            item(5, 1),
        ];
        assert_eq!(lens(&big), vec![2, 1, 1, 1]);
    }

    #[test]
    fn state_lists_are_the_lifecycle_rules() {
        listed(pending_states!(), State::is_pending_order);
        listed(expiring_states!(), State::can_expire);
    }

    #[test]
    fn the_v1_indexes_have_the_conditions_of_the_queries() {
        let v1 = super::super::migrate::MIGRATIONS[0].sql;
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let v1 = squash(v1);
        assert!(v1.contains(&squash(concat!("AND state IN ", expiring_states!()))));
        assert!(v1.contains(&squash(release_pending!())));
        assert!(v1.contains(&squash(hold_pending!())));
        let v2 = squash(super::super::migrate::MIGRATIONS[1].sql);
        assert!(v2.contains(&squash(concat!("AND state IN ", pending_states!()))));
    }
}
