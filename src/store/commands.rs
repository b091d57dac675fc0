//! The command interpreter: every change of the store is one [`Command`],
//! applied in one transaction by a function of its own, then finished by
//! [`Store::finish`]: the lifecycle table, history, outbox, record,
//! indexes and idempotency record, written together. The functions read
//! and write through [`Records`], not an engine's keys.

use super::*;

impl Store {
    /// Applies a command atomically: record, indexes, history, outbox and
    /// idempotency record in one transaction. Not yet durable: call
    /// [`Store::sync`] before acknowledging.
    pub fn apply(&self, cmd: &Command, ctx: &Ctx<'_>) -> Result<Applied> {
        self.apply_then(cmd, ctx, None)
    }

    /// Like [`Store::apply`], and when the command succeeds, `then` writes
    /// more records in the same transaction (a Mobile Plans order beside its
    /// profile's transition). `then` may run more than once (an engine
    /// retries conflicting transactions), so it must only write through `tx`.
    pub(super) fn apply_then(
        &self,
        cmd: &Command,
        ctx: &Ctx<'_>,
        then: Option<&Then<'_>>,
    ) -> Result<Applied> {
        let pool = match cmd {
            Command::DownloadOrder {
                operator,
                iccid: None,
                profile_type: Some(t),
                ..
            } => Some((operator.as_str(), t.as_str())),
            _ => None,
        };
        for _ in 0..16 {
            let run = |tx: &dyn Records| -> TxResult<Applied> {
                let candidate = match cmd {
                    Command::DownloadOrder {
                        operator,
                        iccid: None,
                        profile_type: Some(t),
                        ..
                    } => Some(self.pick_from_pool(tx, operator, t)?),
                    _ => None,
                };
                let applied = self.apply_tx(tx, cmd, ctx, candidate.as_ref())?;
                if let (Some(then), None) = (then, &applied.refusal) {
                    then(tx, &applied.record)?;
                }
                Ok(applied)
            };
            match self.transact_with(pool, run)? {
                Some(mut applied) => {
                    return match applied.refusal.take() {
                        Some(e) => Err(e),
                        None => Ok(applied),
                    }
                }
                // The pool candidate was taken meanwhile: choose again.
                None => continue,
            }
        }
        Err(Error::internal("allocation kept conflicting"))
    }

    /// The profile an allocation takes from the pool of (operator, type)
    /// (SGP.22 §5.3.1), inside the allocating transaction.
    pub(super) fn pick_from_pool(
        &self,
        tx: &dyn Records,
        operator: &str,
        profile_type: &str,
    ) -> TxResult<Iccid> {
        // Another operator's type answers as unknown: SGP.22 (§5.3.1) lets
        // 8.2.5/1.2 exist but does not require it, and telling the two apart
        // would let operators probe each other's inventory.
        if !tx.type_known(profile_type, operator)? {
            return gsma(Error::refused(
                codes::TYPE_UNKNOWN,
                format!(
                    "profile type {} is unknown",
                    crate::error::quote(profile_type)
                ),
            ));
        }
        match tx.pool_candidate(operator, profile_type)? {
            Some(s) => match Iccid::parse(&s) {
                Some(i) => Ok(i),
                None => gsma(Error::internal("corrupt pool entry")),
            },
            None => gsma(Error::refused(
                codes::TYPE_EXHAUSTED,
                format!("no more profiles of type {profile_type}"),
            )),
        }
    }

    pub(super) fn load(&self, tx: &dyn Records, iccid: &Iccid) -> TxResult<ProfileRecord> {
        match tx.profile(iccid.as_str())? {
            Some(r) => Ok(r),
            None => gsma(unknown_iccid(iccid)),
        }
    }

    pub(super) fn load_owned(
        &self,
        tx: &dyn Records,
        iccid: &Iccid,
        operator: &str,
    ) -> TxResult<ProfileRecord> {
        let r = self.load(tx, iccid)?;
        // Another operator's profile answers exactly as an unknown ICCID
        // (SGP.22 §5.3 does not require 8.2.1/1.2 here), so that operators
        // cannot probe each other's inventory.
        if r.operator != operator {
            return gsma(unknown_iccid(iccid));
        }
        Ok(r)
    }

    pub(super) fn apply_tx(
        &self,
        tx: &dyn Records,
        cmd: &Command,
        ctx: &Ctx<'_>,
        candidate: Option<&Iccid>,
    ) -> TxResult<Applied> {
        let now = ctx.now;
        let step: Step = match cmd {
            Command::DownloadOrder {
                operator,
                eid,
                iccid,
                profile_type,
            } => self.download_order(tx, ctx, candidate, operator, eid, iccid, profile_type)?,
            Command::ConfirmOrder {
                operator,
                iccid,
                eid,
                matching_id,
                cc_hashes,
                smds_address,
                release,
            } => self.confirm_order(
                tx,
                operator,
                iccid,
                eid,
                matching_id,
                cc_hashes,
                smds_address,
                release,
            )?,
            Command::ReleaseProfile { operator, iccid } => {
                self.release_profile(tx, operator, iccid)?
            }
            Command::CancelOrder {
                operator,
                iccid,
                eid,
                matching_id,
                final_status,
            } => self.cancel_order(tx, operator, iccid, eid, matching_id, final_status)?,
            Command::Expire { iccid } => self.expire(tx, ctx, iccid)?,
            Command::SetExpiry {
                operator,
                iccid,
                expires_at,
            } => self.set_expiry(tx, operator, iccid, expires_at)?,
            Command::AuthenticateClient {
                iccid,
                eid,
                matching_id,
                max_attempts,
            } => self.authenticate_client(
                tx,
                iccid,
                eid,
                matching_id.as_deref(),
                *max_attempts,
                now,
            )?,
            Command::CheckConfirmationCode {
                iccid,
                transaction_id,
                hash_cc,
                max_attempts,
                eid,
            } => self.check_confirmation_code(
                tx,
                ctx,
                iccid,
                transaction_id,
                hash_cc,
                max_attempts,
                eid,
            )?,
            Command::BppDelivered {
                iccid,
                eid,
                retry,
                keep,
            } => self.bpp_delivered(tx, ctx, iccid, eid, retry, keep)?,
            Command::InstallResult {
                iccid,
                success,
                result_data,
                reason,
            } => self.install_result(tx, iccid, success, result_data, reason)?,
            Command::DeviceNotification { iccid, eid, event } => {
                self.device_notification(tx, iccid, eid, event)?
            }
            Command::DownloadCancelled {
                iccid,
                code,
                reason,
                eid,
            } => self.download_cancelled(tx, iccid, code, reason, eid)?,
        };
        self.finish(tx, ctx, step)
    }

    /// Applies [`Command::DownloadOrder`]: ES2+.DownloadOrder (§5.3.1). One of `iccid` and `profile_type` is set.
    #[allow(
        clippy::too_many_arguments,
        reason = "one parameter a field of the command"
    )]
    pub(super) fn download_order(
        &self,
        tx: &dyn Records,
        ctx: &Ctx<'_>,
        candidate: Option<&Iccid>,
        operator: &str,
        eid: &Option<Eid>,
        iccid: &Option<Iccid>,
        profile_type: &Option<String>,
    ) -> TxResult<Step> {
        let now = ctx.now;
        let old = match (iccid, candidate) {
            (Some(i), _) => {
                let r = self.load_owned(tx, i, operator)?;
                if let Some(t) = profile_type {
                    if *t != r.profile_type {
                        return gsma(Error::refused(
                            codes::TYPE_MISMATCH,
                            format!("ICCID {i} is of type {}, not {t}", r.profile_type),
                        ));
                    }
                }
                r
            }
            (None, Some(c)) => {
                let r = self.load(tx, c)?;
                if r.state != State::Available {
                    return retry();
                }
                r
            }
            (None, None) => {
                return gsma(Error::invalid(
                    codes::FORMAT_CONDITIONAL_MISSING,
                    "iccid or profileType is required",
                ))
            }
        };
        let event = if eid.is_some() {
            Event::DownloadOrderLinked
        } else {
            Event::DownloadOrderAllocated
        };
        let mut new = old.clone();
        new.eid = eid.as_ref().map(|e| e.as_str().to_owned());
        new.expires_at = Some(now.saturating_add(self.inner.opts.order_ttl.as_secs() as i64));
        new.error_reason = None;
        Ok(Step::new(old, new, Some(event)))
    }

    /// Applies [`Command::ConfirmOrder`]: ES2+.ConfirmOrder (§5.3.2).
    #[allow(
        clippy::too_many_arguments,
        reason = "one parameter a field of the command"
    )]
    pub(super) fn confirm_order(
        &self,
        tx: &dyn Records,
        operator: &str,
        iccid: &Iccid,
        eid: &Option<Eid>,
        matching_id: &Option<String>,
        cc_hashes: &[String],
        smds_address: &Option<String>,
        release: &bool,
    ) -> TxResult<Step> {
        let old = self.load_owned(tx, iccid, operator)?;
        let event = if *release {
            Event::ConfirmOrderAndRelease
        } else {
            Event::ConfirmOrder
        };
        lifecycle::next(old.state, event).or_else(gsma)?;
        let mut new = old.clone();
        match (&old.eid, eid) {
            (Some(a), Some(b)) if a != b.as_str() => {
                return gsma(Error::refused(
                    codes::EID_INVALID_ASSOCIATION,
                    format!("ICCID {iccid} is linked to a different EID"),
                ))
            }
            (None, Some(b)) => new.eid = Some(b.as_str().to_owned()),
            _ => {}
        }
        let m = match matching_id {
            Some(m) => m.clone(),
            None => loop {
                let m = generate_matching_id(&mut rand::thread_rng());
                if tx.matching_owner(&m)?.is_none() {
                    break m;
                }
            },
        };
        if m.is_empty() && new.eid.is_none() {
            return gsma(Error::invalid(
                codes::EID_MISSING,
                "an empty matchingId requires an EID",
            ));
        }
        if smds_address.is_some() && new.eid.is_none() {
            return gsma(Error::invalid(
                codes::EID_MISSING,
                "an SM-DS registration requires an EID",
            ));
        }
        if !m.is_empty() {
            if let Some(owner) = tx.matching_owner(&m)? {
                if owner != iccid.as_str() {
                    return gsma(Error::refused(
                        codes::MATCHING_ID_IN_USE,
                        format!("matchingId {m} is already in use"),
                    ));
                }
            }
        }
        new.matching_id = Some(m);
        new.cc_hashes = cc_hashes.to_vec();
        new.smds_address = smds_address.clone();
        Ok(Step::new(old, new, Some(event)))
    }

    /// Applies [`Command::ReleaseProfile`]: ES2+.ReleaseProfile (§5.3.4).
    pub(super) fn release_profile(
        &self,
        tx: &dyn Records,
        operator: &str,
        iccid: &Iccid,
    ) -> TxResult<Step> {
        let old = self.load_owned(tx, iccid, operator)?;
        let new = old.clone();
        Ok(Step::new(old, new, Some(Event::ReleaseProfile)))
    }

    /// Applies [`Command::CancelOrder`]: ES2+.CancelOrder (§5.3.3).
    pub(super) fn cancel_order(
        &self,
        tx: &dyn Records,
        operator: &str,
        iccid: &Iccid,
        eid: &Option<Eid>,
        matching_id: &Option<String>,
        final_status: &FinalStatus,
    ) -> TxResult<Step> {
        let old = self.load_owned(tx, iccid, operator)?;
        let event = match final_status {
            FinalStatus::Available => Event::CancelOrderAvailable,
            FinalStatus::Unavailable => Event::CancelOrderUnavailable,
        };
        lifecycle::next(old.state, event).or_else(gsma)?;
        if let Some(linked) = &old.eid {
            match eid {
                None => {
                    return gsma(Error::invalid(
                        codes::EID_CONDITIONAL_MISSING,
                        "eid is required: the order is linked to an EID",
                    ))
                }
                Some(e) if e.as_str() != linked => {
                    return gsma(Error::refused(
                        codes::ICCID_EID_MISMATCH,
                        format!("ICCID {iccid} is associated with a different EID"),
                    ))
                }
                _ => {}
            }
        }
        if let Some(m) = old.matching_id.as_deref().filter(|m| !m.is_empty()) {
            match matching_id {
                None => {
                    return gsma(Error::invalid(
                        codes::MATCHING_ID_MISSING,
                        "matchingId is required: the order has one",
                    ))
                }
                Some(given) if given != m => {
                    return gsma(Error::refused(
                        codes::MATCHING_ID_MISMATCH,
                        format!("ICCID {iccid} is associated with a different matchingId"),
                    ))
                }
                _ => {}
            }
        }
        let mut new = old.clone();
        new.eid = None;
        new.matching_id = None;
        new.cc_hashes.clear();
        new.smds_address = None;
        new.download_attempts = 0;
        new.cc_attempts = 0;
        new.expires_at = None;
        new.error_reason = None;
        let note = Note::new(POINT_ORDER_CANCELLED, PointStatus::Success, &old);
        Ok(Step::new(old, new, Some(event)).notify(note))
    }

    /// Applies [`Command::Expire`]: the order's time to live ran out.
    pub(super) fn expire(&self, tx: &dyn Records, ctx: &Ctx<'_>, iccid: &Iccid) -> TxResult<Step> {
        let now = ctx.now;
        let old = self.load(tx, iccid)?;
        match old.expires_at {
            Some(t) if t <= now && old.state.can_expire() => {}
            _ => {
                return gsma(Error::refused(
                    codes::ORDER_EXPIRED,
                    format!("order for {iccid} has not expired"),
                ))
            }
        }
        let mut new = old.clone();
        new.error_reason = Some("order expired".into());
        let note = expiry_note(&old);
        Ok(Step::new(old, new, Some(Event::Expired)).notify(note))
    }

    /// Applies [`Command::SetExpiry`]: operator admin call: set the expiry of an open order.
    pub(super) fn set_expiry(
        &self,
        tx: &dyn Records,
        operator: &str,
        iccid: &Iccid,
        expires_at: &i64,
    ) -> TxResult<Step> {
        let old = self.load_owned(tx, iccid, operator)?;
        if !old.state.can_expire() {
            return gsma(Error::refused(
                codes::ICCID_INVALID_TRANSITION,
                format!(
                    "ICCID {iccid} has no open order that can expire (state {})",
                    old.state
                ),
            ));
        }
        let mut new = old.clone();
        new.expires_at = Some(*expires_at);
        Ok(Step::new(old, new, None))
    }

    /// Applies [`Command::CheckConfirmationCode`]: ES9+.GetBoundProfilePackage: check the hashed confirmation code (§5.6.2).
    #[allow(
        clippy::too_many_arguments,
        reason = "one parameter a field of the command"
    )]
    pub(super) fn check_confirmation_code(
        &self,
        tx: &dyn Records,
        ctx: &Ctx<'_>,
        iccid: &Iccid,
        transaction_id: &[u8],
        hash_cc: &Option<Vec<u8>>,
        max_attempts: &u32,
        eid: &Option<Eid>,
    ) -> TxResult<Step> {
        let now = ctx.now;
        let old = self.load(tx, iccid)?;
        if !matches!(old.state, State::Released | State::Downloaded) {
            return gsma(Error::refused(
                codes::PROFILE_UNAVAILABLE,
                format!("the order for {iccid} is {}", old.state),
            ));
        }
        if let Some(step) = expiry_refusal(&old, now, eid.as_ref()) {
            return Ok(step);
        }
        let mut new = old.clone();
        Ok(if old.cc_hashes.is_empty() {
            Step::new(old, new, None)
        } else {
            let Some(given) = hash_cc else {
                return gsma(Error::refused(
                    codes::CC_MISSING,
                    "the order requires a confirmation code",
                ));
            };
            let matches = old
                .cc_hashes
                .iter()
                .filter_map(|h| hex::decode(h).ok())
                .any(|h| {
                    let mut d = Sha256::new();
                    d.update(&h);
                    d.update(transaction_id);
                    d.finalize().as_slice() == given.as_slice()
                });
            if matches {
                Step::new(old, new, None)
            } else {
                new.cc_attempts = new.cc_attempts.saturating_add(1);
                if new.cc_attempts >= *max_attempts {
                    new.error_reason = Some("confirmation code retries exceeded".into());
                    let status = PointStatus::failed(
                        codes::CC_RETRIES_EXCEEDED,
                        "confirmation code retries exceeded",
                    );
                    let note =
                        Note::new(POINT_CONFIRMATION_FAILURE, status, &old).or_eid(eid.as_ref());
                    Step::new(old, new, Some(Event::LimitExceeded))
                        .notify(note)
                        .refuse(Error::refused(
                            codes::CC_RETRIES_EXCEEDED,
                            "confirmation code retries exceeded",
                        ))
                } else {
                    Step::new(old, new, None).refuse(Error::refused(
                        codes::CC_REFUSED,
                        "confirmation code refused",
                    ))
                }
            }
        })
    }

    /// Applies [`Command::BppDelivered`]: a Bound Profile Package was handed to the LPA; the EID is linked.
    pub(super) fn bpp_delivered(
        &self,
        tx: &dyn Records,
        ctx: &Ctx<'_>,
        iccid: &Iccid,
        eid: &Eid,
        retry: &Option<RetryKind>,
        keep: &Option<Box<bound::KeptPackage>>,
    ) -> TxResult<Step> {
        let now = ctx.now;
        let old = self.load(tx, iccid)?;
        let mut new = old.clone();
        match &old.eid {
            Some(linked) if linked != eid.as_str() => {
                return gsma(Error::refused(
                    codes::EID_REFUSED,
                    format!("ICCID {iccid} is linked to another EID"),
                ))
            }
            _ => new.eid = Some(eid.as_str().to_owned()),
        }
        if old.state == State::Released {
            if let Some(step) = expiry_refusal(&old, now, Some(eid)) {
                return Ok(step);
            }
        }
        match (keep, retry) {
            (Some(p), _) => {
                let mut p = (**p).clone();
                // Never beyond the order's own time to live.
                if let Some(t) = old.expires_at {
                    p.expires_at = p.expires_at.min(t);
                }
                tx.put_kept(iccid.as_str(), Some(&p))?;
            }
            (None, Some(RetryKind::SameKey)) => {}
            (None, _) => {
                tx.put_kept(iccid.as_str(), None)?;
            }
        }
        let mut step = Step::new(old.clone(), new, Some(Event::BppDelivered));
        step.retry = *retry;
        Ok(if old.state == State::Released {
            step.notify(Note::new(POINT_BPP_DOWNLOAD, PointStatus::Success, &old).with_eid(eid))
        } else {
            step
        })
    }

    /// Applies [`Command::InstallResult`]: a verified ProfileInstallationResult (§5.6.4).
    pub(super) fn install_result(
        &self,
        tx: &dyn Records,
        iccid: &Iccid,
        success: &bool,
        result_data: &[u8],
        reason: &Option<String>,
    ) -> TxResult<Step> {
        let old = self.load(tx, iccid)?;
        // In Error, only a late result for a delivered package whose
        // order expired while waiting for it.
        if old.state == State::Error && !expired_after_delivery(tx, &old)? {
            return gsma(Error::refused(
                codes::ICCID_INVALID_TRANSITION,
                format!("ICCID {iccid} has no installation pending"),
            ));
        }
        let mut new = old.clone();
        let (event, status) = if *success {
            // A late result for an order that expired meanwhile.
            new.error_reason = None;
            (Event::InstallSucceeded, PointStatus::Success)
        } else {
            new.error_reason = Some(
                reason
                    .clone()
                    .unwrap_or_else(|| "installation failed".into()),
            );
            (
                Event::InstallFailed,
                PointStatus::failed(
                    codes::BPP_EXECUTION_ERROR,
                    reason.clone().unwrap_or_default(),
                ),
            )
        };
        let mut note = Note::new(POINT_BPP_INSTALLATION, status, &old);
        note.result_data = Some(result_data.to_vec());
        Ok(Step::new(old, new, Some(event)).notify(note))
    }

    /// Applies [`Command::DeviceNotification`]: a verified OtherSignedNotification about an installed profile (§3.5, §5.6.4): enable, disable or delete on the device.
    pub(super) fn device_notification(
        &self,
        tx: &dyn Records,
        iccid: &Iccid,
        eid: &Eid,
        event: &Event,
    ) -> TxResult<Step> {
        let old = self.load(tx, iccid)?;
        if old.eid.as_deref() != Some(eid.as_str()) {
            return gsma(Error::refused(
                codes::EID_REFUSED,
                format!("ICCID {iccid} is not installed on this eUICC"),
            ));
        }
        let new = old.clone();
        Ok(if *event == Event::DeviceDeleted {
            let note = Note::new(POINT_DEVICE_DELETED, PointStatus::Success, &old);
            Step::new(old, new, Some(*event)).notify(note)
        } else {
            Step::new(old, new, Some(*event))
        })
    }

    /// Applies [`Command::DownloadCancelled`]: a terminal ES9+.CancelSession reason ended the order (§5.6.5).
    pub(super) fn download_cancelled(
        &self,
        tx: &dyn Records,
        iccid: &Iccid,
        code: &StatusCode,
        reason: &str,
        eid: &Option<Eid>,
    ) -> TxResult<Step> {
        let old = self.load(tx, iccid)?;
        let mut new = old.clone();
        new.error_reason = Some(reason.to_owned());
        let point = if old.state == State::Downloaded {
            POINT_BPP_DOWNLOAD
        } else {
            POINT_ELIGIBILITY
        };
        let note = Note::new(point, PointStatus::failed(*code, reason), &old).or_eid(eid.as_ref());
        Ok(Step::new(old, new, Some(Event::DownloadCancelled)).notify(note))
    }

    /// Applies a [`Step`]: the lifecycle table, history, outbox, record,
    /// indexes and idempotency record, in the caller's transaction.
    pub(super) fn finish(&self, tx: &dyn Records, ctx: &Ctx<'_>, step: Step) -> TxResult<Applied> {
        let now = ctx.now;
        let Step {
            old,
            mut new,
            event,
            note,
            refusal,
            retry,
        } = step;
        let changed = match event {
            Some(event) => {
                let (to, effect) = lifecycle::step(old.state, event).or_else(gsma)?;
                let changed = effect == lifecycle::Effect::Recorded;
                if changed {
                    new.state = to;
                    let h = HistoryEntry {
                        v: RECORD_VERSION,
                        at: now,
                        event,
                        from: Some(old.state),
                        to,
                        caller: ctx.caller.to_owned(),
                        retry,
                    };
                    tx.put_history(&new.iccid, new.history_len, &h)?;
                    new.history_len += 1;
                }
                changed
            }
            None => false,
        };
        let mut enqueued = false;
        if changed {
            if !new.state.can_expire() {
                new.expires_at = None;
            }
            // A kept package lives only while its order is Downloaded:
            // installed, failed, expired or cancelled, it is erased here,
            // in the transition's own transaction.
            if new.state != State::Downloaded {
                tx.put_kept(&new.iccid, None)?;
            }
            if let Some(n) = note {
                let id = tx.new_id()?;
                let item = OutboxItem {
                    v: RECORD_VERSION,
                    id,
                    operator: new.operator.clone(),
                    eid: n.eid,
                    iccid: new.iccid.clone(),
                    profile_type: new.profile_type.clone(),
                    timestamp: now,
                    point: n.point,
                    status: n.status,
                    result_data: n.result_data,
                    attempts: 0,
                    next_attempt_ms: now.saturating_mul(1000),
                    last_error: None,
                };
                tx.put_outbox(None, &item)?;
                enqueued = true;
            }
        }
        if new != old {
            new.updated_at = now;
            tx.put_profile(Some(&old), &new)?;
        }
        self.write_idem(tx, ctx, &new)?;
        Ok(Applied {
            from: old.state,
            record: new,
            changed,
            refusal,
            enqueued,
        })
    }

    /// The order-matching part of ES9+.AuthenticateClient inside the
    /// transaction: the order still names this EID or matchingId, is
    /// released (or downloaded, on a retry), has not expired, and is within
    /// its download-attempt limit. Expiry and the limit end the order
    /// (committed, with an operator notification) and are returned as the
    /// refusal.
    pub(super) fn authenticate_client(
        &self,
        tx: &dyn Records,
        iccid: &Iccid,
        eid: &Eid,
        matching_id: Option<&str>,
        max_attempts: u32,
        now: i64,
    ) -> TxResult<Step> {
        let old = self.load(tx, iccid)?;
        match (&old.eid, matching_id.filter(|m| !m.is_empty())) {
            (Some(linked), _) if linked != eid.as_str() => {
                return gsma(Error::refused(
                    codes::EID_REFUSED,
                    "the order is linked to another EID",
                ))
            }
            (_, Some(m)) if old.matching_id.as_deref() != Some(m) => {
                return gsma(Error::refused(
                    codes::MATCHING_ID_REFUSED,
                    "matchingId refused",
                ))
            }
            (None, None) => {
                return gsma(Error::refused(
                    codes::MATCHING_ID_REFUSED,
                    "matchingId refused",
                ))
            }
            _ => {}
        }
        if let Some(step) = expiry_refusal(&old, now, Some(eid)) {
            return Ok(step);
        }
        let mut new = old.clone();
        if !matches!(old.state, State::Released | State::Downloaded) {
            return gsma(Error::refused(
                codes::PROFILE_NOT_RELEASED,
                format!("the profile is {}, not released", old.state),
            ));
        }
        new.download_attempts = new.download_attempts.saturating_add(1);
        if new.download_attempts > max_attempts {
            new.error_reason = Some("download retries exceeded".into());
            let status = PointStatus::failed(
                codes::DOWNLOAD_RETRIES_EXCEEDED,
                "download retries exceeded",
            );
            let note = Note::new(POINT_ELIGIBILITY, status, &old).with_eid(eid);
            return Ok(Step::new(old, new, Some(Event::LimitExceeded))
                .notify(note)
                .refuse(Error::refused(
                    codes::DOWNLOAD_RETRIES_EXCEEDED,
                    "the maximum number of download attempts was reached",
                )));
        }
        Ok(Step::new(old, new, None))
    }

    pub(super) fn write_idem(
        &self,
        tx: &dyn Records,
        ctx: &Ctx<'_>,
        rec: &ProfileRecord,
    ) -> TxResult<()> {
        if let Some(idem) = &ctx.idem {
            let r = IdemRecord {
                at: ctx.now,
                response: (idem.render)(rec),
            };
            tx.put_idempotency(&idem.key, &r)?;
        }
        Ok(())
    }
}
