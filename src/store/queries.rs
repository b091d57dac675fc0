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
        let linked = self.pending_orders(eid)?;
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
        self.engine().first_taken_in(first.as_str(), last.as_str())
    }

    /// One profile.
    pub fn get(&self, iccid: &Iccid) -> Result<Option<ProfileRecord>> {
        self.engine().profile(iccid.as_str())
    }

    /// The stored package of a profile.
    pub fn package(&self, rec: &ProfileRecord) -> Result<Option<Vec<u8>>> {
        self.engine().package(rec)
    }

    /// A profile's history, oldest first.
    pub fn history(&self, iccid: &Iccid) -> Result<Vec<HistoryEntry>> {
        let first = self.get(iccid)?.and_then(|r| r.import_entry());
        let mut out: Vec<HistoryEntry> = first.into_iter().collect();
        out.extend(self.engine().history(iccid.as_str())?);
        Ok(out)
    }

    /// Profiles matching a filter, in ICCID order.
    pub fn list(&self, f: &ListFilter) -> Result<Vec<ProfileRecord>> {
        self.engine().list(f)
    }

    /// The ICCID an active MatchingID names.
    pub fn by_matching_id(&self, m: &str) -> Result<Option<Iccid>> {
        if m.is_empty() {
            return Ok(None);
        }
        Ok(self
            .engine()
            .by_matching_id(m)?
            .and_then(|i| Iccid::parse(&i)))
    }

    /// ICCIDs of the open orders linked to an EID.
    pub fn pending_for_eid(&self, eid: &Eid) -> Result<Vec<Iccid>> {
        iccids(self.engine().pending_for_eid(eid.as_str())?)
    }

    /// The records of the open orders linked to an EID, in ICCID order.
    pub fn pending_orders(&self, eid: &Eid) -> Result<Vec<ProfileRecord>> {
        self.engine().pending_records_for_eid(eid.as_str())
    }

    /// ICCIDs in the available pool of (operator, type).
    pub fn pool(&self, operator: &str, profile_type: &str) -> Result<Vec<Iccid>> {
        iccids(self.engine().pool(operator, profile_type)?)
    }

    /// Orders whose expiry is at or before `now`.
    pub fn due_expiries(&self, now: i64) -> Result<Vec<Iccid>> {
        iccids(self.engine().due_expiries(now)?)
    }
}

/// ICCIDs as an engine returns them, checked.
fn iccids(raw: Vec<String>) -> Result<Vec<Iccid>> {
    raw.iter()
        .map(|s| Iccid::parse(s).ok_or_else(|| Error::internal("corrupt ICCID in an index")))
        .collect()
}
