//! The PostgreSQL engine as the [`Destination`] of a store migration
//! (`store::migrate`), over the copy functions of [`sql`] and the row
//! mapping of [`rows`].
//!
//! Like every other call of the engine, each one blocks on the engine's
//! own runtime (see [`super::engine`]): the migration is plain
//! synchronous code, written once for any pair of engines, and the
//! command line runs it on a blocking thread. A batch is one
//! transaction; the digests read every table in one read-only
//! REPEATABLE READ transaction (one snapshot), without the statement
//! timeout, in pages.

use super::engine::PgEngine;
use super::{rows, sql, PgError};
use crate::error::{Error, Result};
use crate::store::migrate::{self, Destination, Digests, Key, ProfileExport, Record, Table};
use std::collections::BTreeMap;
use tokio_postgres::IsolationLevel;

/// Rows per page of a digest scan.
const SCAN_PAGE: i32 = 1000;

/// The text keys among `keys`.
fn texts(keys: &[Key]) -> Vec<String> {
    keys.iter()
        .filter_map(|k| match k {
            Key::Text(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// The id keys among `keys`, as `bigint`s.
fn ids(keys: &[Key]) -> Result<Vec<i64>> {
    keys.iter()
        .filter_map(|k| match k {
            Key::Id(n) => {
                Some(i64::try_from(*n).map_err(|_| Error::internal(format!("id {n} is too large"))))
            }
            _ => None,
        })
        .collect()
}

/// Inserts one record (and a profile's history and kept package, only
/// when the profile itself was inserted). Whether it was inserted.
async fn insert_one(c: &sql::Tx<'_>, r: &Record) -> Result<bool, PgError> {
    Ok(match r {
        Record::Profile(p) => {
            let iccid = p.record.iccid.as_str();
            if !sql::import_profile(c, &p.record, &p.package).await? {
                return Ok(false);
            }
            for (seq, h) in &p.history {
                sql::import_history(c, iccid, *seq, h).await?;
            }
            if let Some(k) = &p.kept {
                sql::import_kept(c, iccid, k).await?;
            }
            true
        }
        Record::ProfileType {
            profile_type,
            operator,
        } => sql::import_profile_type(c, profile_type, operator).await?,
        Record::Outbox(o) => sql::import_outbox(c, o).await?,
        Record::Idempotency { key, record } => sql::import_idempotency(c, key, record).await?,
        Record::Balance(b) => sql::import_balance(c, b).await?,
        Record::Use { id, at } => sql::import_use(c, id, *at).await?,
        Record::MpOrder(o) => sql::import_order(c, o).await?,
    })
}

/// The canonical form of a row of `table` as [`sql::scan_query`] reads it.
fn canonical_row(table: Table, r: &tokio_postgres::Row) -> Result<Vec<u8>, PgError> {
    Ok(match table {
        Table::Profiles => {
            let package: &[u8] = r.try_get("package")?;
            migrate::canonical_profile(&rows::profile(r)?, package)
        }
        Table::ProfileHistory => {
            let iccid: &str = r.try_get("iccid")?;
            let seq = rows::ubig(r.try_get("seq")?, "history seq")?;
            migrate::canonical_history(iccid, seq, &rows::history(r)?)
        }
        Table::KeptPackages => {
            let iccid: &str = r.try_get("iccid")?;
            migrate::canonical_kept(iccid, &rows::kept(r)?)
        }
        Table::ProfileTypes => {
            migrate::canonical_type(r.try_get("profile_type")?, r.try_get("operator")?)
        }
        Table::Outbox => migrate::canonical_outbox(&rows::outbox(r)?),
        Table::Idempotency => {
            let (key, record) = rows::idempotency(r)?;
            migrate::canonical_idempotency(&key, &record)
        }
        Table::Balances => migrate::canonical_balance(&rows::balance(r)?),
        Table::BalanceTransactionIds => migrate::canonical_use(r.try_get("id")?, r.try_get("at")?),
        Table::MobilePlansOrders => migrate::canonical_order(&rows::order(r)?),
    })
}

impl Destination for PgEngine {
    fn existing(&self, table: Table, keys: &[Key]) -> Result<Vec<Record>> {
        match table {
            Table::Profiles => {
                let iccids = texts(keys);
                let iccids = &iccids;
                let (profiles, history, kept) = self.call(|c| async move {
                    Ok((
                        sql::profiles_by_iccids(&c, iccids).await?,
                        sql::history_by_iccids(&c, iccids).await?,
                        sql::kept_by_iccids(&c, iccids).await?,
                    ))
                })?;
                let mut by: BTreeMap<String, ProfileExport> = profiles
                    .into_iter()
                    .map(|(record, package)| {
                        (
                            record.iccid.clone(),
                            ProfileExport {
                                record,
                                package,
                                history: vec![],
                                kept: None,
                                kept_unusable: false,
                            },
                        )
                    })
                    .collect();
                for (iccid, seq, h) in history {
                    if let Some(p) = by.get_mut(&iccid) {
                        p.history.push((seq, h));
                    }
                }
                for (iccid, k) in kept {
                    if let Some(p) = by.get_mut(&iccid) {
                        p.kept = Some(k);
                    }
                }
                Ok(by
                    .into_values()
                    .map(|p| Record::Profile(Box::new(p)))
                    .collect())
            }
            Table::ProfileTypes => {
                let (types, operators): (Vec<String>, Vec<String>) = keys
                    .iter()
                    .filter_map(|k| match k {
                        Key::Pair(t, o) => Some((t.clone(), o.clone())),
                        _ => None,
                    })
                    .unzip();
                let (types, operators) = (&types, &operators);
                let found = self
                    .call(|c| async move { sql::profile_types_in(&c, types, operators).await })?;
                Ok(found
                    .into_iter()
                    .map(|(profile_type, operator)| Record::ProfileType {
                        profile_type,
                        operator,
                    })
                    .collect())
            }
            Table::Outbox => {
                let ids = ids(keys)?;
                let ids = &ids;
                let found = self.call(|c| async move { sql::outbox_by_ids(&c, ids).await })?;
                Ok(found.into_iter().map(Record::Outbox).collect())
            }
            Table::Idempotency => {
                let hashes: Vec<Vec<u8>> = keys
                    .iter()
                    .filter_map(|k| match k {
                        Key::Hash(h) => Some(h.to_vec()),
                        _ => None,
                    })
                    .collect();
                let hashes = &hashes;
                let found =
                    self.call(|c| async move { sql::idempotency_by_keys(&c, hashes).await })?;
                Ok(found
                    .into_iter()
                    .map(|(key, record)| Record::Idempotency { key, record })
                    .collect())
            }
            Table::Balances => {
                let iccids = texts(keys);
                let iccids = &iccids;
                let found =
                    self.call(|c| async move { sql::balances_by_iccids(&c, iccids).await })?;
                Ok(found.into_iter().map(Record::Balance).collect())
            }
            Table::BalanceTransactionIds => {
                let uses = texts(keys);
                let uses = &uses;
                let found = self.call(|c| async move { sql::uses_by_ids(&c, uses).await })?;
                Ok(found
                    .into_iter()
                    .map(|(id, at)| Record::Use { id, at })
                    .collect())
            }
            Table::MobilePlansOrders => {
                let ids = ids(keys)?;
                let ids = &ids;
                let found = self.call(|c| async move { sql::orders_by_ids(&c, ids).await })?;
                Ok(found.into_iter().map(Record::MpOrder).collect())
            }
            Table::ProfileHistory | Table::KeptPackages => Ok(vec![]),
        }
    }

    fn insert(&self, records: &[&Record]) -> Result<Vec<Key>> {
        self.call(|mut c| async move {
            let tx = c.transaction().await?;
            let mut inserted = Vec::new();
            for r in records {
                if insert_one(&tx, r).await? {
                    inserted.push(r.key());
                }
            }
            tx.commit().await?;
            Ok(inserted)
        })
    }

    fn raise_ids(&self, above: u64) -> Result<()> {
        self.call(|c| async move { sql::raise_record_ids(&c, above).await })
    }

    fn digests(&self) -> Result<Digests> {
        self.call(|mut c| async move {
            let tx = c
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
            let mut d = Digests::default();
            for table in Table::ALL {
                let mut add = |r: &tokio_postgres::Row| -> Result<(), PgError> {
                    d.add(table, &canonical_row(table, r)?);
                    Ok(())
                };
                sql::scan(&tx, sql::scan_query(table), SCAN_PAGE, &mut add).await?;
            }
            tx.commit().await?;
            Ok(d)
        })
    }
}
