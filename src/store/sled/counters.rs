//! Profile counts per state and per available pool (the pool levels of
//! the metrics), kept in the tree so that opening a store of millions of
//! profiles reads a few keys instead of every record.
//!
//! Every transaction that writes a profile record also writes one delta
//! entry under a key of its own (`cd/` + a sled id), so that concurrent
//! transactions never touch the same counter key and never conflict on
//! it. The folder adds the deltas to the base counts (`cb/`) and removes
//! them in one atomic batch, at open and every [`FOLD_EVERY`] deltas.
//! Opening reads the base and the deltas left since the last fold.
//!
//! | key | value |
//! |---|---|
//! | `cm/version` | counter layout version (u32 BE): the counts below are complete |
//! | `cb/s` state | profiles in that state (i64 BE) |
//! | `cb/p` operator `\0` type | Available profiles of that pool (i64 BE) |
//! | `cd/` id (u64 BE) | [`Delta`] of one transaction or import batch |
//!
//! A store written before the counters existed has no `cm/version`: it is
//! counted once by scanning its records, and the counts are written.

use super::keys::key;
use crate::error::{Error, Result};
use crate::store::lifecycle::State;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the counter layout, kept at [`VERSION_KEY`].
const VERSION: u32 = 1;
const VERSION_KEY: &[u8] = b"cm/version";
const BASE_STATE: &str = "cb/s";
const BASE_POOL: &str = "cb/p";
const DELTA: &str = "cd/";

/// Deltas written between two folds.
pub(super) const FOLD_EVERY: u64 = 4096;

/// Profile counts: per state, and Available per (operator, profile type).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Profiles per state.
    pub states: BTreeMap<State, i64>,
    /// Available profiles per (operator, profile type).
    pub pools: BTreeMap<(String, String), i64>,
}

impl Counts {
    /// Counts by reading every profile record.
    pub(super) fn scan(tree: &sled::Tree) -> Result<Counts> {
        let mut c = Counts::default();
        for kv in tree.scan_prefix(b"p/") {
            let (k, v) = kv?;
            let r = super::compact::decode_profile(&super::keys::profile_iccid(&k), &v)?;
            *c.states.entry(r.state).or_insert(0) += 1;
            if r.state == State::Available {
                *c.pools.entry((r.operator, r.profile_type)).or_insert(0) += 1;
            }
        }
        Ok(c)
    }

    fn add(&mut self, d: &Delta) {
        for (s, n) in &d.states {
            *self.states.entry(*s).or_insert(0) += n;
        }
        for (op, ty, n) in &d.pools {
            *self.pools.entry((op.clone(), ty.clone())).or_insert(0) += n;
        }
    }

    /// The count of `s`.
    pub fn state(&self, s: State) -> i64 {
        self.states.get(&s).copied().unwrap_or(0)
    }
}

/// What one transaction changes in the counts.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Delta {
    states: Vec<(State, i64)>,
    pools: Vec<(String, String, i64)>,
}

impl Delta {
    /// The change that writing profile records makes: (state before, if
    /// the record existed; state after; operator; profile type).
    pub(super) fn of_writes(writes: &[(Option<State>, State, String, String)]) -> Delta {
        let mut c = Counts::default();
        for (from, to, operator, profile_type) in writes {
            if let Some(f) = from {
                *c.states.entry(*f).or_insert(0) -= 1;
            }
            *c.states.entry(*to).or_insert(0) += 1;
            let pool =
                i64::from(*to == State::Available) - i64::from(*from == Some(State::Available));
            if pool != 0 {
                *c.pools
                    .entry((operator.clone(), profile_type.clone()))
                    .or_insert(0) += pool;
            }
        }
        Delta {
            states: c.states.into_iter().filter(|(_, n)| *n != 0).collect(),
            pools: c
                .pools
                .into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|((o, t), n)| (o, t, n))
                .collect(),
        }
    }

    /// `n` new Available profiles per pool.
    pub(super) fn of_import(pools: &BTreeMap<(&str, &str), i64>) -> Delta {
        Delta {
            states: vec![(State::Available, pools.values().sum())],
            pools: pools
                .iter()
                .map(|((o, t), n)| ((*o).to_owned(), (*t).to_owned(), *n))
                .collect(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.states.is_empty() && self.pools.is_empty()
    }

    /// The delta's key (`id` from sled's id generator) and value.
    pub(super) fn entry(&self, id: u64) -> (Vec<u8>, Vec<u8>) {
        (
            key(DELTA, &[&id.to_be_bytes()]),
            serde_json::to_vec(self).unwrap_or_default(),
        )
    }
}

fn state_key(s: State) -> Vec<u8> {
    key(BASE_STATE, &[format!("{s:?}").as_bytes()])
}

fn pool_key(operator: &str, profile_type: &str) -> Vec<u8> {
    key(
        BASE_POOL,
        &[operator.as_bytes(), b"\0", profile_type.as_bytes()],
    )
}

fn int(v: &[u8]) -> Result<i64> {
    v.try_into()
        .map(i64::from_be_bytes)
        .map_err(|_| Error::internal("corrupt counter"))
}

/// The base counts and the deltas not yet folded: (counts, delta keys).
fn read(tree: &sled::Tree) -> Result<(Counts, Vec<sled::IVec>)> {
    let mut c = Counts::default();
    for kv in tree.scan_prefix(BASE_STATE.as_bytes()) {
        let (k, v) = kv?;
        let name = String::from_utf8_lossy(&k[BASE_STATE.len()..]).into_owned();
        let s = State::ALL
            .into_iter()
            .find(|s| format!("{s:?}") == name)
            .ok_or_else(|| Error::internal(format!("counter of an unknown state {name}")))?;
        c.states.insert(s, int(&v)?);
    }
    for kv in tree.scan_prefix(BASE_POOL.as_bytes()) {
        let (k, v) = kv?;
        let rest = &k[BASE_POOL.len()..];
        let mut parts = rest.splitn(2, |b| *b == 0);
        let op = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let ty = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        c.pools.insert((op, ty), int(&v)?);
    }
    let mut keys = vec![];
    for kv in tree.scan_prefix(DELTA.as_bytes()) {
        let (k, v) = kv?;
        let d: Delta = serde_json::from_slice(&v)
            .map_err(|e| Error::internal(format!("corrupt counter delta: {e}")))?;
        c.add(&d);
        keys.push(k);
    }
    Ok((c, keys))
}

/// The counts the store holds, or `None` for a store written before they
/// existed.
pub(super) fn load(tree: &sled::Tree) -> Result<Option<Counts>> {
    if tree.get(VERSION_KEY)?.is_none() {
        return Ok(None);
    }
    Ok(Some(read(tree)?.0))
}

/// Adds the deltas written so far to the base counts and removes them, in
/// one atomic batch. Deltas committed meanwhile stay for the next fold.
/// The caller makes sure that only one fold runs at a time.
pub(super) fn fold(tree: &sled::Tree) -> Result<usize> {
    let (c, keys) = read(tree)?;
    if keys.is_empty() {
        return Ok(0);
    }
    let mut batch = sled::Batch::default();
    put_base(&mut batch, &c);
    for k in &keys {
        batch.remove(k);
    }
    tree.apply_batch(batch)?;
    Ok(keys.len())
}

/// Adds to `batch` what sets the base counts to `c` (zero counts
/// removed).
fn put_base(batch: &mut sled::Batch, c: &Counts) {
    for s in State::ALL {
        match c.state(s) {
            0 => batch.remove(state_key(s)),
            n => batch.insert(state_key(s), &n.to_be_bytes()[..]),
        }
    }
    for ((op, ty), n) in &c.pools {
        match n {
            0 => batch.remove(pool_key(op, ty)),
            n => batch.insert(pool_key(op, ty), &n.to_be_bytes()[..]),
        }
    }
    batch.insert(VERSION_KEY, &VERSION.to_be_bytes()[..]);
}

/// Replaces whatever counts the store holds with `c` (from a scan): for a
/// store written before the counters existed, and for a repair. Must not
/// run beside writers.
pub(super) fn reset(tree: &sled::Tree, c: &Counts) -> Result<()> {
    let mut batch = sled::Batch::default();
    for p in [BASE_STATE, BASE_POOL, DELTA] {
        for kv in tree.scan_prefix(p.as_bytes()) {
            batch.remove(kv?.0);
        }
    }
    // Later writes to a key in a batch replace earlier ones.
    put_base(&mut batch, c);
    tree.apply_batch(batch)?;
    Ok(())
}
