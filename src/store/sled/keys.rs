//! Keys of the sled engine's one tree (the table in the [sled](super)
//! module's documentation) and the index entries a record implies: derived
//! from the record alone, so that every write can replace the old record's
//! entries with the new one's.

use crate::store::lifecycle::State;
use crate::store::mobileplans::MobilePlansOrder;
use crate::store::{OutboxItem, ProfileRecord};

/// A key: the prefix, then the parts as they are.
pub(crate) fn key(prefix: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub(crate) fn profile_key(iccid: &str) -> Vec<u8> {
    key("p/", &[iccid.as_bytes()])
}
/// The ICCID of a profile record's key (`p/` ICCID).
pub(crate) fn profile_iccid(k: &[u8]) -> String {
    String::from_utf8_lossy(k.get(2..).unwrap_or_default()).into_owned()
}
pub(crate) fn package_key(iccid: &str) -> Vec<u8> {
    key("b/", &[iccid.as_bytes()])
}
pub(crate) fn history_key(iccid: &str, seq: u64) -> Vec<u8> {
    key("h/", &[iccid.as_bytes(), b"/", &seq.to_be_bytes()])
}
pub(crate) fn matching_key(m: &str) -> Vec<u8> {
    key("m/", &[m.as_bytes()])
}
pub(crate) fn pool_prefix(operator: &str, profile_type: &str) -> Vec<u8> {
    key(
        "a/",
        &[operator.as_bytes(), b"\0", profile_type.as_bytes(), b"\0"],
    )
}
pub(crate) fn type_key(profile_type: &str, operator: &str) -> Vec<u8> {
    key("t/", &[profile_type.as_bytes(), b"\0", operator.as_bytes()])
}
pub(crate) fn outbox_key(id: u64) -> Vec<u8> {
    key("o/", &[&id.to_be_bytes()])
}
pub(crate) fn outbox_due_prefix(operator: &str) -> Vec<u8> {
    key("od/", &[operator.as_bytes(), b"\0"])
}
pub(crate) fn outbox_operator_prefix(operator: &str) -> Vec<u8> {
    key("oi/", &[operator.as_bytes(), b"\0"])
}
/// Version of the outbox index layout, kept at [`OUTBOX_INDEX_KEY`].
pub(crate) const OUTBOX_INDEX_VERSION: u32 = 1;
/// Marks a store whose outbox items all have their index entries.
pub(crate) const OUTBOX_INDEX_KEY: &[u8] = b"om/index";

/// The outbox index entries an item implies, (key, value): its due-time
/// entry (`od/`, by operator and next attempt, which the worker reads to
/// find what is due) and its per-operator entry (`oi/`, by id, whose value
/// is the event time: the first one is the operator's oldest item).
pub fn outbox_index_keys(item: &OutboxItem) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut due = outbox_due_prefix(&item.operator);
    due.extend_from_slice(&(item.next_attempt_ms.max(0) as u64).to_be_bytes());
    due.extend_from_slice(&item.id.to_be_bytes());
    let mut by_op = outbox_operator_prefix(&item.operator);
    by_op.extend_from_slice(&item.id.to_be_bytes());
    vec![
        (due, vec![]),
        (by_op, item.timestamp.to_be_bytes().to_vec()),
    ]
}

/// The value stored under an index key of `iccid`'s record: empty for a
/// pool entry (`a/`, whose key ends with the ICCID), the ICCID for the
/// others.
pub(crate) fn index_value<'a>(k: &[u8], iccid: &'a str) -> &'a [u8] {
    if k.starts_with(b"a/") {
        &[]
    } else {
        iccid.as_bytes()
    }
}

/// The ICCID of a pool entry (`a/`): the key after the pool's prefix of
/// `prefix_len` bytes. Entries written before kept it as their value too.
pub(crate) fn pool_iccid(k: &[u8], prefix_len: usize) -> String {
    String::from_utf8_lossy(k.get(prefix_len..).unwrap_or_default()).into_owned()
}

/// The index keys a record implies ([`index_value`] gives each value).
pub fn index_keys(r: &ProfileRecord) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(4);
    if r.state == State::Available {
        let mut k = pool_prefix(&r.operator, &r.profile_type);
        k.extend_from_slice(r.iccid.as_bytes());
        out.push(k);
    }
    if let Some(m) = r.matching_id.as_deref().filter(|m| !m.is_empty()) {
        out.push(matching_key(m));
    }
    if let (Some(eid), true) = (&r.eid, r.state.is_pending_order()) {
        out.push(key("e/", &[eid.as_bytes(), b"/", r.iccid.as_bytes()]));
    }
    if let (Some(t), true) = (r.expires_at, r.state.can_expire()) {
        out.push(key(
            "x/",
            &[&(t.max(0) as u64).to_be_bytes(), r.iccid.as_bytes()],
        ));
    }
    out
}

pub(crate) fn kept_key(iccid: &str) -> Vec<u8> {
    key("n/", &[iccid.as_bytes()])
}

pub(crate) fn balance_key(iccid: &str) -> Vec<u8> {
    key("g/", &[iccid.as_bytes()])
}

pub(crate) fn use_key(id: &str) -> Vec<u8> {
    key("c/", &[id.as_bytes()])
}

pub(crate) fn use_age_key(at: i64, id: &str) -> Vec<u8> {
    key("ct/", &[&(at.max(0) as u64).to_be_bytes(), id.as_bytes()])
}

/// The Unix seconds a stored use value holds.
pub(crate) fn use_at(v: &[u8]) -> Option<i64> {
    Some(u64::from_be_bytes(v.try_into().ok()?) as i64)
}

pub(crate) fn order_key(id: u64) -> Vec<u8> {
    key("u/", &[&id.to_be_bytes()])
}

pub(crate) fn txid_key(transaction_id: &str) -> Vec<u8> {
    key("k/", &[transaction_id.as_bytes()])
}

/// The index keys a Mobile Plans order implies; every value is the order
/// id (u64 BE).
pub fn order_index_keys(o: &MobilePlansOrder) -> Vec<Vec<u8>> {
    let id = o.id.to_be_bytes();
    let mut out = vec![
        txid_key(&o.transaction_id),
        key("l/", &[o.iccid.as_bytes(), b"/", &id]),
    ];
    if let Some(eid) = &o.eid {
        out.push(key("d/", &[eid.as_bytes(), b"/", &id]));
    }
    if let (true, Some(t)) = (o.release_pending(), o.release_at) {
        out.push(key("r/", &[&(t.max(0) as u64).to_be_bytes(), &id]));
    }
    if let (true, Some(t)) = (o.hold_pending(), o.hold_until) {
        out.push(key("w/", &[&(t.max(0) as u64).to_be_bytes(), &id]));
    }
    out
}

/// An order id stored as an index value.
pub(crate) fn id_of(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}
