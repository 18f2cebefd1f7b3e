//! The one path every requested change takes: serialise on the card, bring it up to now,
//! apply the pure rule, make the carrier agree through the journal, then persist the card, its
//! events, the audit record and the idempotent answer together.

use chrono::{DateTime, Utc};
use tracing::warn;

use super::journal::Origin;
use crate::carrier::Rebind;
use crate::domain::lifecycle;
use crate::domain::{Card, CarrierPolicy, Iccid, RuleViolation, Transition};
use crate::store::StoreError;

use super::{Caller, CardIdem, CardService, Result};

impl CardService {
    /// A change whose answer is the card after it.
    pub(super) async fn change<F>(
        &self,
        iccid: &Iccid,
        caller: &Caller,
        idem: CardIdem<'_, '_>,
        rule: F,
    ) -> Result<Card>
    where
        F: FnOnce(&Card, &CarrierPolicy, DateTime<Utc>) -> Result<Transition, RuleViolation>,
    {
        self.mutate(iccid, caller, idem, rule)
            .await
            .map(|(_, after)| after)
    }

    /// The one path every requested change takes: serialise on the card, bring it up to now,
    /// apply the pure rule, make the carrier agree, then persist. A carrier failure leaves the
    /// store untouched.
    pub(super) async fn mutate<F>(
        &self,
        iccid: &Iccid,
        caller: &Caller,
        idem: CardIdem<'_, '_>,
        rule: F,
    ) -> Result<(Card, Card)>
    where
        F: FnOnce(&Card, &CarrierPolicy, DateTime<Utc>) -> Result<Transition, RuleViolation>,
    {
        self.mutate_with(iccid, caller, idem, rule, None).await
    }

    /// [`CardService::mutate`] with a rebind's parameters (for `Rebind` actions).
    pub(super) async fn mutate_with<F>(
        &self,
        iccid: &Iccid,
        caller: &Caller,
        idem: CardIdem<'_, '_>,
        rule: F,
        rebind: Option<&Rebind>,
    ) -> Result<(Card, Card)>
    where
        F: FnOnce(&Card, &CarrierPolicy, DateTime<Utc>) -> Result<Transition, RuleViolation>,
    {
        let _guard = self.locks.lock(iccid.as_str()).await;
        let now = self.now();
        let before = match self.get(iccid, caller).await {
            Ok(card) => card,
            Err(e) => {
                self.audit_failure(
                    caller,
                    Some(iccid),
                    caller.principal.customer_id.as_deref(),
                    &e,
                )
                .await;
                return Err(e);
            }
        };
        let result = if before.pending.is_some() {
            let request_id = idem.map(|i| i.request_id.as_str());
            match self
                .own_open_order(&before, &caller.principal.key_id, request_id)
                .await
            {
                // A retry of the request whose change is scheduled or with the carrier as an
                // order: it gets the answer it got, the card with its pending order.
                Ok(true) => return Ok((before.clone(), before)),
                Ok(false) => Err(self
                    .pending_error(&before, &caller.principal.key_id, request_id)
                    .await),
                Err(e) => Err(e),
            }
        } else {
            self.apply(&before, caller, idem, now, rule, rebind).await
        };
        match &result {
            // A bulk operation's item tried again while a change of its card is with the
            // carrier (its own in a batch call in flight, or just settling): not a new request
            // but the worker waiting, which tries it again; its change is audited once, when
            // it settles.
            Err(
                super::ServiceError::OutcomePending { .. }
                | super::ServiceError::Rule(crate::domain::RuleViolation::ChangePending(_)),
            ) if super::journal::is_bulk(caller.method) => {}
            Err(e) => {
                self.audit_failure(caller, Some(iccid), Some(&before.customer_id), e)
                    .await
            }
            Ok(_) => {}
        }
        result.map(|after| (before, after))
    }

    async fn apply<F>(
        &self,
        before: &Card,
        caller: &Caller,
        idem: CardIdem<'_, '_>,
        now: DateTime<Utc>,
        rule: F,
        rebind: Option<&Rebind>,
    ) -> Result<Card>
    where
        F: FnOnce(&Card, &CarrierPolicy, DateTime<Utc>) -> Result<Transition, RuleViolation>,
    {
        let carrier = self.carrier(&before.account)?;
        let policy = carrier.policy();
        let mut t = lifecycle::at_now(before, policy, now, |c| rule(c, policy, now))?;
        if rebind.is_some() && t.action != Some(crate::domain::CarrierAction::Rebind) {
            // Time moved the card's service state first (a due stop the engine has yet to
            // send): that change goes out on its own, and the rebind is retried after it.
            return Err(super::ServiceError::Conflict);
        }
        self.with_alerts(before, &mut t, now).await?;
        let kinds: Vec<&str> = t.events.iter().map(|e| e.kind).collect();
        let audit = caller.audit(
            self.wall_now(),
            Some(&before.iccid),
            Some(&before.customer_id),
            "OK",
            if t.changed {
                kinds.join(",")
            } else {
                "no change".into()
            },
        );
        if !t.changed {
            if let Some(i) = idem {
                let answer = i.record(caller, &(before.clone(), before.clone()), now);
                match self.store.put_idempotency(&answer).await {
                    Ok(()) => {}
                    // The request already has its answer: its own change settled between its
                    // replay check and now (a bulk item tried again while its batch settled).
                    // That change is audited; "no change" would be a second record of it.
                    Err(StoreError::Duplicate { .. }) => return Ok(before.clone()),
                    Err(e) => return Err(e.into()),
                }
            }
            if let Err(e) = self.store.record_audit(&audit).await {
                warn!(error = %e, "could not write the audit record of a call that changed nothing");
            }
            return Ok(before.clone());
        }
        let answer = idem.map(|i| {
            // The answer describes the card as this write stores it (the store bumps the version).
            let mut after = t.card.clone();
            after.version = before.version + 1;
            i.record(caller, &(before.clone(), after), now)
        });
        let origin = Origin {
            source: format!("{}:{}", caller.method, caller.request_id),
            key_id: caller.principal.key_id.clone(),
            request_id: idem.map(|i| i.request_id.clone()).unwrap_or_default(),
        };
        self.commit_change(
            carrier.as_ref(),
            t,
            Some(&audit),
            answer.as_ref(),
            &origin,
            rebind,
        )
        .await
    }
}
