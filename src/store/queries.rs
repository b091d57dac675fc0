//! Reads: records, histories, listings, indexes, and the order an
//! authenticated eUICC asks for (SGP.22 §5.6.3).

use super::*;

impl Store {
    /// Finds the order an authenticated eUICC asks for (SGP.22 §5.6.3,
    /// p.170).
    ///
    /// - A matchingId names the order: one linked to this EID (a pending
    ///   order, or a retry of a delivered one), else an order linked to no
    ///   EID. An order linked to another EID is 8.1.1/3.8; an unknown
    ///   matchingId 8.2.6/3.8.
    /// - `strict`: the literal §5.6.3 rule, under which an EID with a
    ///   pending order may only use that order's matchingId. By default an
    ///   unbound order is accepted anyway: any eUICC could claim it, so
    ///   refusing only stops a user with two purchases.
    /// - No matchingId (or an empty one): this EID's released order, else a
    ///   retry of its delivered one, else its unreleased order (refused
    ///   later with 8.2/1.2); none is 8.1.1/3.8.
    ///
    /// A delivered order waiting for its installation result (Downloaded)
    /// is not a pending order here: it never blocks the eUICC's others.
    pub fn resolve_order(
        &self,
        eid: &Eid,
        matching_id: Option<&str>,
        strict: bool,
    ) -> Result<Iccid> {
        let matching_id = matching_id.filter(|m| !m.is_empty());
        let linked: Vec<ProfileRecord> = self
            .pending_for_eid(eid)?
            .iter()
            .filter_map(|i| self.get(i).ok().flatten())
            .collect();
        let waiting = || linked.iter().filter(|r| r.state != State::Downloaded);
        let parse = |r: &ProfileRecord| {
            Iccid::parse(&r.iccid).ok_or_else(|| Error::internal("corrupt ICCID"))
        };
        let Some(m) = matching_id else {
            return match waiting()
                .find(|r| r.state == State::Released)
                .or_else(|| linked.iter().find(|r| r.state == State::Downloaded))
                .or_else(|| waiting().next())
            {
                Some(r) => parse(r),
                None => Err(Error::refused(
                    codes::EID_REFUSED,
                    "no download order for this eUICC, and no matchingId",
                )),
            };
        };
        if let Some(r) = linked.iter().find(|r| r.matching_id.as_deref() == Some(m)) {
            return parse(r);
        }
        let refused = || Error::refused(codes::MATCHING_ID_REFUSED, "matchingId refused");
        let iccid = self.by_matching_id(m)?.ok_or_else(refused)?;
        let r = self.get(&iccid)?.ok_or_else(refused)?;
        match r.eid.as_deref() {
            Some(e) if e != eid.as_str() => Err(Error::refused(
                codes::EID_REFUSED,
                "the order is linked to another EID",
            )),
            None if strict && waiting().next().is_some() => Err(Error::refused(
                codes::MATCHING_ID_REFUSED,
                "matchingId does not name the pending order of this eUICC",
            )),
            _ => Ok(iccid),
        }
    }

    /// The first stored ICCID of the same length as `first` and `last`
    /// that lies between them (inclusive), if any: one range scan that
    /// tells whether a block of consecutive ICCIDs is still free.
    pub fn first_taken_in(&self, first: &Iccid, last: &Iccid) -> Result<Option<String>> {
        let width = first.as_str().len();
        let range = profile_key(first.as_str())..=profile_key(last.as_str());
        for kv in self.tree()?.range(range) {
            let (k, _) = kv?;
            let iccid = k.get(2..).unwrap_or_default();
            if iccid.len() == width {
                return Ok(Some(String::from_utf8_lossy(iccid).into_owned()));
            }
        }
        Ok(None)
    }

    /// One profile.
    pub fn get(&self, iccid: &Iccid) -> Result<Option<ProfileRecord>> {
        match self.tree()?.get(profile_key(iccid.as_str()))? {
            Some(v) => {
                Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                    Error::internal(format!("corrupt record: {e}"))
                })?))
            }
            None => Ok(None),
        }
    }

    /// The stored package of a profile.
    pub fn package(&self, rec: &ProfileRecord) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree()?
            .get(rec.package_ref.as_bytes())?
            .map(|v| v.to_vec()))
    }

    /// A profile's history, oldest first.
    pub fn history(&self, iccid: &Iccid) -> Result<Vec<HistoryEntry>> {
        let first = self.get(iccid)?.and_then(|r| r.import_entry());
        let stored = self
            .tree()?
            .scan_prefix(key("h/", &[iccid.as_str().as_bytes(), b"/"]))
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt history: {e}")))
            });
        first.map(Ok).into_iter().chain(stored).collect()
    }

    /// Profiles matching a filter, in ICCID order.
    pub fn list(&self, f: &ListFilter) -> Result<Vec<ProfileRecord>> {
        let mut out = vec![];
        for kv in self.tree()?.scan_prefix(b"p/") {
            let (_, v) = kv?;
            let r: ProfileRecord = serde_json::from_slice(&v)
                .map_err(|e| Error::internal(format!("corrupt record: {e}")))?;
            if f.operator.as_ref().is_some_and(|o| *o != r.operator)
                || f.state.is_some_and(|s| s != r.state)
                || f.profile_type
                    .as_ref()
                    .is_some_and(|t| *t != r.profile_type)
            {
                continue;
            }
            out.push(r);
            if f.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }

    /// The ICCID an active MatchingID names.
    pub fn by_matching_id(&self, m: &str) -> Result<Option<Iccid>> {
        Ok(self
            .tree()?
            .get(matching_key(m))?
            .and_then(|v| Iccid::parse(&String::from_utf8_lossy(&v))))
    }

    /// ICCIDs of the open orders linked to an EID.
    pub fn pending_for_eid(&self, eid: &Eid) -> Result<Vec<Iccid>> {
        self.tree()?
            .scan_prefix(key("e/", &[eid.as_str().as_bytes(), b"/"]))
            .map(|kv| {
                let (_, v) = kv?;
                Iccid::parse(&String::from_utf8_lossy(&v))
                    .ok_or_else(|| Error::internal("corrupt EID index"))
            })
            .collect()
    }

    /// ICCIDs in the available pool of (operator, type).
    pub fn pool(&self, operator: &str, profile_type: &str) -> Result<Vec<Iccid>> {
        self.tree()?
            .scan_prefix(pool_prefix(operator, profile_type))
            .map(|kv| {
                let (_, v) = kv?;
                Iccid::parse(&String::from_utf8_lossy(&v))
                    .ok_or_else(|| Error::internal("corrupt pool entry"))
            })
            .collect()
    }

    /// Orders whose expiry is at or before `now`.
    pub fn due_expiries(&self, now: i64) -> Result<Vec<Iccid>> {
        let end = key(
            "x/",
            &[&((now.max(0) as u64).saturating_add(1)).to_be_bytes()],
        );
        self.tree()?
            .range(b"x/".to_vec()..end)
            .map(|kv| {
                let (_, v) = kv?;
                Iccid::parse(&String::from_utf8_lossy(&v))
                    .ok_or_else(|| Error::internal("corrupt expiry index"))
            })
            .collect()
    }

    /// Every raw index entry, for consistency checks: (key, value).
    pub fn index_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        for p in ["a/", "m/", "e/", "x/"] {
            for kv in self.tree()?.scan_prefix(p.as_bytes()) {
                let (k, v) = kv?;
                out.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }
}
