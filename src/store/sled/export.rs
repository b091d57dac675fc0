//! The sled engine as the [`Source`] of a store migration: each table's
//! records in key order, in batches after a key, decoded from the key
//! layout of [`super::keys`].

use super::keys::*;
use super::Sled;
use crate::error::{Error, Result};
use crate::store::bound::{KeptPackage, KEPT_VERSION};
use crate::store::migrate::{Key, ProfileExport, Record, Source, Table};
use crate::store::{HistoryEntry, ProfileRecord, StoreOptions};
use std::ops::Bound;

/// Whether an open failed because another process holds the database.
fn locked(e: &Error) -> bool {
    e.message.contains("could not acquire lock")
}

impl Sled {
    /// Opens an existing sled database to copy it elsewhere: refuses a
    /// path that holds none (rather than creating one), and a database
    /// another process has open (a running server).
    pub fn open_existing(path: &std::path::Path) -> Result<Sled> {
        if !Sled::exists_at(path) {
            return Err(Error::internal(format!(
                "{} holds no sled store",
                path.display()
            )));
        }
        Sled::open(path, &StoreOptions::default()).map_err(|e| {
            if locked(&e) {
                Error::unavailable(format!(
                    "the sled store at {} is open in another process (a running server?): \
                     stop the server first",
                    path.display()
                ))
            } else {
                e
            }
        })
    }

    /// Whether `path` is a sled database folder (sled keeps its `conf`
    /// file there).
    pub fn exists_at(path: &std::path::Path) -> bool {
        path.join("conf").is_file()
    }

    /// Up to `limit` (key, value) entries under `prefix` whose key (after
    /// the prefix) sorts after `after`.
    fn after(
        &self,
        prefix: &[u8],
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>> {
        let tree = self.tree()?;
        let start = match after {
            Some(a) => Bound::Excluded(key_bytes(prefix, &a)),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut out = Vec::new();
        for kv in tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, v) = kv?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// A profile with its package, history and kept package.
    /// `package` is the one at the end of the record, if it has one.
    fn profile_export(
        &self,
        record: ProfileRecord,
        package: Option<&[u8]>,
    ) -> Result<ProfileExport> {
        let tree = self.tree()?;
        let iccid = record.iccid.clone();
        let package = match package {
            Some(p) => p.to_vec(),
            None => tree
                .get(package_key(&iccid))?
                .ok_or_else(|| Error::internal(format!("profile {iccid} has no stored package")))?
                .to_vec(),
        };
        let mut history = Vec::new();
        let prefix = key("h/", &[iccid.as_bytes(), b"/"]);
        for kv in tree.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let Some(seq) = k
                .get(prefix.len()..)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            let entry: HistoryEntry = decode(&v, "history entry", &iccid)?;
            history.push((seq, entry));
        }
        let (kept, kept_unusable) = match tree.get(kept_key(&iccid))? {
            None => (None, false),
            Some(v) => match serde_json::from_slice::<KeptPackage>(&v) {
                Ok(k) if k.v == KEPT_VERSION => (Some(k), false),
                _ => (None, true),
            },
        };
        Ok(ProfileExport {
            record,
            package,
            history,
            kept,
            kept_unusable,
        })
    }
}

/// The full key of an entry under `prefix`.
fn key_bytes(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(rest);
    k
}

/// A stored JSON record.
fn decode<T: serde::de::DeserializeOwned>(v: &[u8], what: &str, at: &str) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| Error::internal(format!("corrupt {what} {at}: {e}")))
}

/// The key bytes (after the prefix) of a cursor.
fn cursor(k: &Key) -> Vec<u8> {
    match k {
        Key::Text(s) => s.as_bytes().to_vec(),
        Key::Id(n) => n.to_be_bytes().to_vec(),
        Key::Hash(h) => h.to_vec(),
        Key::Pair(a, b) => key_bytes(a.as_bytes(), &key_bytes(b"\0", b.as_bytes())),
    }
}

/// The text after a prefix.
fn text(k: &[u8], prefix: usize) -> String {
    String::from_utf8_lossy(k.get(prefix..).unwrap_or_default()).into_owned()
}

impl Source for Sled {
    fn export(&self, table: Table, after: Option<&Key>, limit: usize) -> Result<Vec<Record>> {
        let after = after.map(cursor);
        let prefix: &[u8] = match table {
            Table::Profiles => b"p/",
            Table::ProfileTypes => b"t/",
            Table::Outbox => b"o/",
            Table::Idempotency => b"i/",
            Table::Balances => b"g/",
            Table::BalanceTransactionIds => b"c/",
            Table::MobilePlansOrders => b"u/",
            Table::ProfileHistory | Table::KeptPackages => return Ok(vec![]),
        };
        let entries = self.after(prefix, after, limit)?;
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let at = match table {
                Table::Outbox | Table::MobilePlansOrders => k
                    .get(prefix.len()..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or_else(
                        || text(&k, prefix.len()),
                        |b| u64::from_be_bytes(b).to_string(),
                    ),
                _ => text(&k, prefix.len()),
            };
            out.push(match table {
                Table::Profiles => {
                    let (r, package) = super::compact::decode_with_package(&at, &v)?;
                    Record::Profile(Box::new(self.profile_export(r, package)?))
                }
                Table::ProfileTypes => {
                    let rest = k.get(prefix.len()..).unwrap_or_default();
                    let mut parts = rest.splitn(2, |b| *b == 0);
                    let t = parts.next().unwrap_or_default();
                    let o = parts.next().unwrap_or_default();
                    Record::ProfileType {
                        profile_type: String::from_utf8_lossy(t).into_owned(),
                        operator: String::from_utf8_lossy(o).into_owned(),
                    }
                }
                Table::Outbox => Record::Outbox(decode(&v, "outbox item", &at)?),
                Table::Idempotency => {
                    let hash = k
                        .get(prefix.len()..)
                        .and_then(|h| <[u8; 32]>::try_from(h).ok())
                        .ok_or_else(|| Error::internal("corrupt idempotency key"))?;
                    Record::Idempotency {
                        key: hash,
                        record: decode(&v, "idempotency record", &hex::encode(hash))?,
                    }
                }
                Table::Balances => Record::Balance(decode(&v, "balance", &at)?),
                Table::BalanceTransactionIds => Record::Use {
                    at: use_at(&v).ok_or_else(|| {
                        Error::internal(format!("corrupt GetBalance transaction id {at}"))
                    })?,
                    id: at,
                },
                Table::MobilePlansOrders => Record::MpOrder(decode(&v, "Mobile Plans order", &at)?),
                Table::ProfileHistory | Table::KeptPackages => continue,
            });
        }
        Ok(out)
    }

    fn id_watermark(&self) -> Result<u64> {
        Ok(self.handle()?.db.generate_id()?)
    }
}
