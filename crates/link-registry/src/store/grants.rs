//! Users' grants and consents under way. A refresh is coordinated through the grant's row
//! alone, so it holds across every broker and registry replica: the lease is taken by one
//! conditional `UPDATE` (no unexpired lease, not awaiting consent), and a refresh commits only by
//! another conditional `UPDATE` that names the lease it holds and the version it leased: a broker
//! that stalled past its lease, or whose grant a new consent replaced, writes nothing.

use super::*;
use crate::domain::{
    changes::ChangeScope,
    model::{
        Grant, GrantKey, GrantState, HeldConsent, NewAuditEvent, PendingAuthorization, StoredSecret,
    },
    page::GrantPageKey,
    store::{GrantFilter, GrantStore, RefreshOutcome},
    types::{ConnectorId, UserId},
};

fn key_condition(key: &GrantKey) -> Condition {
    use grant::Column as G;
    Condition::all()
        .add(G::TeamId.eq(key.team_id.as_str()))
        .add(G::ConnectorId.eq(key.connector_id.as_str()))
        .add(G::ProjectId.eq(key.project_id.as_ref().map_or("", |p| p.as_str())))
        .add(G::UserId.eq(key.user_id.as_str()))
        .add(G::Environment.eq(key.environment.as_str()))
        .add(G::InstallationId.eq(key.installation_id.as_str()))
}

/// Queues a refresh token (as sealed) for a broker to revoke at the provider, inside `txn`.
async fn queue_revocation(
    txn: &DatabaseTransaction,
    key: &GrantKey,
    sealing_name: String,
    refresh: &StoredSecret,
    now: DateTime<Utc>,
) -> Result<()> {
    grant_revocation::ActiveModel {
        team_id: sea_orm::Set(key.team_id.to_string()),
        connector_id: sea_orm::Set(key.connector_id.to_string()),
        refresh_token: sea_orm::Set(
            serde_json::to_string(refresh).expect("a sealed secret serializes"),
        ),
        sealing_name: sea_orm::Set(sealing_name),
        created_at: sea_orm::Set(now),
        ..Default::default()
    }
    .insert(txn)
    .await
    .map_err(storage_error)?;
    Ok(())
}

impl SeaStore {
    /// Stores `g` over the grant of its key inside `txn`: the stored grant, its audit event, and
    /// (with `revoke_replaced`, when the grant it replaces had a refresh token, now queued for
    /// revocation) the change that makes a broker revoke it.
    async fn put_grant_in(
        &self,
        txn: &DatabaseTransaction,
        g: &Grant,
        actor: &Actor,
        revoke_replaced: bool,
    ) -> Result<(Grant, NewAuditEvent, Option<(&'static str, ChangeScope)>)> {
        // The connector row is locked (PostgreSQL): a grant and a destination change serialize.
        self.connector_for_update(
            txn,
            &g.key.team_id,
            &ConnectorRef::Id(g.key.connector_id.clone()),
        )
        .await?;
        let before = grant::Entity::find()
            .filter(key_condition(&g.key))
            .one(txn)
            .await
            .map_err(storage_error)?
            .map(rows::grant)
            .transpose()?;
        let mut stored = g.clone();
        stored.state = GrantState::Active;
        stored.lease = None;
        stored.last_error = None;
        match &before {
            Some(old) => {
                stored.id = old.id;
                stored.version = old.version + 1;
                stored.created_at = old.created_at;
                rows::grant_row(&stored)
                    .into_active_model()
                    .reset_all()
                    .update(txn)
                    .await
                    .map_err(storage_error)?;
            }
            None => {
                stored.version = 1;
                let mut row = grant::ActiveModel::from(rows::grant_row(&stored));
                row.id = sea_orm::ActiveValue::NotSet;
                stored.id = grant::Entity::insert(row)
                    .exec(txn)
                    .await
                    .map_err(|e| {
                        write_error(e, |_| {
                            RegistryError::FailedPrecondition(
                                "another consent for this grant was stored at the same time".into(),
                            )
                        })
                    })?
                    .last_insert_id;
            }
        }
        let mut change = None;
        // A refresh token the new grant keeps (the same value imported again) is not revoked.
        if revoke_replaced
            && let Some(old) = &before
            && let Some(refresh) = &old.refresh_token
            && g.refresh_token
                .as_ref()
                .is_none_or(|new| new.fingerprint != refresh.fingerprint)
        {
            let (name, now) = (old.key.sealing_name("refresh"), stored.updated_at);
            queue_revocation(txn, &old.key, name, refresh, now).await?;
            let connector = connector::Entity::find_by_id(old.key.connector_id.as_str())
                .one(txn)
                .await
                .map_err(storage_error)?
                .map(rows::connector)
                .transpose()?;
            // Brokers take the queued refresh token to the provider and drop the copies they
            // cached of the user's access token (without revoking them: the copy a broker holds
            // may already be the new grant's).
            change = connector.map(|c| {
                (
                    "grant.replace",
                    ChangeScope {
                        subject: Some(format!("user:{}", old.key.user_id)),
                        installation_id: Some(old.key.installation_id.clone()),
                        project_id: old.key.project_id.clone(),
                        ..ChangeScope::connector(&c.team_id, &c.id, &c.uid)
                    },
                )
            });
        }
        let event = audit::grant_stored(actor, before.as_ref(), &stored);
        Ok((stored, event, change))
    }

    /// How many of the connector's grants there are (inside a write transaction): their tokens
    /// are sealed to the connector's destinations.
    pub(super) async fn grants_of(
        &self,
        txn: &DatabaseTransaction,
        connector: &Connector,
    ) -> Result<u64> {
        grant::Entity::find()
            .filter(grant::Column::ConnectorId.eq(connector.id.as_str()))
            .count(txn)
            .await
            .map_err(storage_error)
    }
}

#[async_trait]
impl GrantStore for SeaStore {
    async fn put_grant(&self, g: &Grant, actor: &Actor, revoke_replaced: bool) -> Result<Grant> {
        let txn = self.begin_write().await?;
        let (stored, event, change) = self
            .put_grant_in(&txn.txn, g, actor, revoke_replaced)
            .await?;
        txn.commit_as(event, change).await?;
        Ok(stored)
    }

    async fn grant(&self, key: &GrantKey) -> Result<Option<Grant>> {
        let row = grant::Entity::find()
            .filter(key_condition(key))
            .one(&self.db)
            .await
            .map_err(storage_error)?;
        row.map(rows::grant).transpose()
    }

    async fn grants(
        &self,
        team: &TeamId,
        filter: &GrantFilter,
        page: &PageRequest<GrantPageKey>,
    ) -> Result<Vec<Grant>> {
        let found = super::lists::grants_page(team, filter, page)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        found.into_iter().map(rows::grant).collect()
    }

    async fn lease_grant(
        &self,
        id: i64,
        version: i64,
        lease_id: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        use grant::Column as G;
        let free = Condition::any()
            .add(G::LeaseExpiresAt.is_null())
            .add(G::LeaseExpiresAt.lt(now));
        let taken = grant::Entity::update_many()
            .col_expr(G::LeaseId, Expr::value(lease_id))
            .col_expr(G::LeaseExpiresAt, Expr::value(until))
            .filter(G::Id.eq(id))
            .filter(G::Version.eq(version))
            .filter(G::State.ne(GrantState::NeedsConsent.as_str()))
            .filter(free)
            .exec(&self.db)
            .await
            .map_err(storage_error)?;
        Ok(taken.rows_affected == 1)
    }

    async fn finish_refresh(
        &self,
        id: i64,
        fence: i64,
        lease_id: &str,
        outcome: RefreshOutcome,
        now: DateTime<Utc>,
    ) -> Result<Option<Grant>> {
        use grant::Column as G;
        let txn = self.begin_write().await?;
        let Some(before) = grant::Entity::find_by_id(id)
            .filter(G::Version.eq(fence))
            .filter(G::LeaseId.eq(lease_id))
            .one(&txn.txn)
            .await
            .map_err(storage_error)?
            .map(rows::grant)
            .transpose()?
        else {
            return Ok(None);
        };
        let mut after = before.clone();
        after.lease = None;
        after.updated_at = now;
        match outcome {
            RefreshOutcome::Refreshed {
                access_token,
                refresh_token,
                expires_at,
                scopes,
            } => {
                after.access_token = access_token;
                if let Some(rotated) = refresh_token {
                    after.refresh_token = Some(rotated);
                }
                after.expires_at = expires_at;
                after.scopes = scopes;
                after.state = GrantState::Active;
                after.version += 1;
                after.last_error = None;
                after.last_refresh_at = Some(now);
            }
            RefreshOutcome::Refused { error } => {
                after.state = GrantState::NeedsConsent;
                after.last_error = Some(connect_types::ids::truncate(&error, 300));
            }
            RefreshOutcome::Unavailable { error } => {
                after.state = GrantState::RefreshFailed;
                after.last_error = Some(connect_types::ids::truncate(&error, 300));
            }
        }
        // The same conditions again, in the write: the row cannot have moved in between on
        // SQLite (one writer), and on PostgreSQL a concurrent commit makes this one match nothing.
        let written = grant::Entity::update_many()
            .set(grant::ActiveModel::from(rows::grant_row(&after)).reset_all())
            .filter(G::Id.eq(id))
            .filter(G::Version.eq(fence))
            .filter(G::LeaseId.eq(lease_id))
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        if written.rows_affected != 1 {
            return Ok(None);
        }
        if after.state != before.state {
            txn.commit(audit::grant_state_changed(&before, &after), None)
                .await?;
        } else {
            txn.commit_unaudited().await?;
        }
        Ok(Some(after))
    }

    async fn require_consent(&self, id: i64, why: &str, now: DateTime<Utc>) -> Result<()> {
        let txn = self.begin_write().await?;
        let Some(before) = grant::Entity::find_by_id(id)
            .one(&txn.txn)
            .await
            .map_err(storage_error)?
            .map(rows::grant)
            .transpose()?
        else {
            return Ok(());
        };
        if before.state == GrantState::NeedsConsent {
            return Ok(());
        }
        let mut after = before.clone();
        after.state = GrantState::NeedsConsent;
        after.last_error = Some(why.to_owned());
        after.lease = None;
        after.updated_at = now;
        rows::grant_row(&after)
            .into_active_model()
            .reset_all()
            .update(&txn.txn)
            .await
            .map_err(storage_error)?;
        txn.commit(audit::grant_state_changed(&before, &after), None)
            .await
    }

    async fn delete_grants(
        &self,
        connector: &Connector,
        user: Option<&UserId>,
        installation: Option<&str>,
        queue_refresh_tokens: bool,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        use grant::Column as G;
        let txn = self.begin_write().await?;
        let mut select = grant::Entity::find().filter(G::ConnectorId.eq(connector.id.as_str()));
        if let Some(user) = user {
            select = select.filter(G::UserId.eq(user.as_str()));
        }
        if let Some(installation) = installation {
            select = select.filter(G::InstallationId.eq(installation));
        }
        let gone: Vec<Grant> = select
            .all(&txn.txn)
            .await
            .map_err(storage_error)?
            .into_iter()
            .map(rows::grant)
            .collect::<Result<_>>()?;
        if gone.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = gone.iter().map(|g| g.id).collect();
        for chunk in ids.chunks(500) {
            grant::Entity::delete_many()
                .filter(G::Id.is_in(chunk.iter().copied()))
                .exec(&txn.txn)
                .await
                .map_err(storage_error)?;
        }
        if queue_refresh_tokens {
            for g in &gone {
                let Some(refresh) = &g.refresh_token else {
                    continue;
                };
                let name = g.key.sealing_name("refresh");
                queue_revocation(&txn.txn, &g.key, name, refresh, now).await?;
            }
        }
        txn.commit(audit::grants_deleted(actor, connector, &gone, now), None)
            .await?;
        Ok(gone.len() as u64)
    }

    async fn claim_grant_revocations(
        &self,
        connector: &ConnectorId,
        limit: u64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(i64, String, StoredSecret)>> {
        use grant_revocation::Column as R;
        let free = || {
            Condition::any()
                .add(R::ClaimedUntil.is_null())
                .add(R::ClaimedUntil.lt(now))
        };
        let rows = grant_revocation::Entity::find()
            .filter(R::ConnectorId.eq(connector.as_str()))
            .filter(free())
            .order_by(R::Id, Order::Asc)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            // One conditional update per row: of two brokers, one takes it.
            let taken = grant_revocation::Entity::update_many()
                .col_expr(R::ClaimedUntil, Expr::value(until))
                .filter(R::Id.eq(row.id))
                .filter(free())
                .exec(&self.db)
                .await
                .map_err(storage_error)?;
            if taken.rows_affected == 1 {
                let sealed = serde_json::from_str(&row.refresh_token)
                    .map_err(|e| rows::corrupt("stored grant revocation", e.to_string()))?;
                claimed.push((row.id, row.sealing_name, sealed));
            }
        }
        Ok(claimed)
    }

    async fn finish_grant_revocations(&self, connector: &ConnectorId, ids: &[i64]) -> Result<()> {
        use grant_revocation::Column as R;
        for chunk in ids.chunks(500) {
            grant_revocation::Entity::delete_many()
                .filter(R::ConnectorId.eq(connector.as_str()))
                .filter(R::Id.is_in(chunk.iter().copied()))
                .exec(&self.db)
                .await
                .map_err(storage_error)?;
        }
        Ok(())
    }

    async fn departed_connector(
        &self,
        team: &TeamId,
        connector: &ConnectorId,
    ) -> Result<Option<Connector>> {
        departed_connector::Entity::find_by_id(connector.as_str())
            .filter(departed_connector::Column::TeamId.eq(team.as_str()))
            .one(&self.db)
            .await
            .map_err(storage_error)?
            .map(|row| rows::connector(row.into()))
            .transpose()
    }

    async fn claim_departed_revocations(
        &self,
        connector: &ConnectorId,
        limit: u64,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(i64, String, StoredSecret)>> {
        use departed_revocation::Column as R;
        let free = || {
            Condition::any()
                .add(R::ClaimedUntil.is_null())
                .add(R::ClaimedUntil.lt(now))
        };
        let rows = departed_revocation::Entity::find()
            .filter(R::ConnectorId.eq(connector.as_str()))
            .filter(free())
            .order_by(R::Id, Order::Asc)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            // One conditional update per row: of two brokers, one takes it.
            let taken = departed_revocation::Entity::update_many()
                .col_expr(R::ClaimedUntil, Expr::value(until))
                .filter(R::Id.eq(row.id))
                .filter(free())
                .exec(&self.db)
                .await
                .map_err(storage_error)?;
            if taken.rows_affected == 1 {
                let sealed = serde_json::from_str(&row.refresh_token)
                    .map_err(|e| rows::corrupt("stored departed revocation", e.to_string()))?;
                claimed.push((row.id, row.sealing_name, sealed));
            }
        }
        Ok(claimed)
    }

    async fn finish_departed_revocations(
        &self,
        connector: &ConnectorId,
        ids: &[i64],
    ) -> Result<()> {
        use departed_revocation::Column as R;
        let txn = self.begin_write().await?;
        for chunk in ids.chunks(500) {
            departed_revocation::Entity::delete_many()
                .filter(R::ConnectorId.eq(connector.as_str()))
                .filter(R::Id.is_in(chunk.iter().copied()))
                .exec(&txn.txn)
                .await
                .map_err(storage_error)?;
        }
        let left = departed_revocation::Entity::find()
            .filter(R::ConnectorId.eq(connector.as_str()))
            .count(&txn.txn)
            .await
            .map_err(storage_error)?;
        if left == 0 {
            departed_connector::Entity::delete_by_id(connector.as_str())
                .exec(&txn.txn)
                .await
                .map_err(storage_error)?;
        }
        txn.commit_unaudited().await
    }

    async fn queued_grant_revocations(&self, connector: &ConnectorId) -> Result<u64> {
        grant_revocation::Entity::find()
            .filter(grant_revocation::Column::ConnectorId.eq(connector.as_str()))
            .count(&self.db)
            .await
            .map_err(storage_error)
    }

    async fn insert_pending(&self, pending: &PendingAuthorization) -> Result<()> {
        // Consents never completed go when they could no longer be.
        authorization_request::Entity::delete_many()
            .filter(authorization_request::Column::ExpiresAt.lt(pending.created_at))
            .exec(&self.db)
            .await
            .map_err(storage_error)?;
        authorization_request::ActiveModel::from(rows::pending_row(pending))
            .insert(&self.db)
            .await
            .map_err(|e| {
                write_error(e, |_| {
                    RegistryError::FailedPrecondition("the authorization state is taken".into())
                })
            })?;
        Ok(())
    }

    async fn take_pending(
        &self,
        state_hash: &str,
        connector: &ConnectorId,
    ) -> Result<Option<PendingAuthorization>> {
        use authorization_request::Column as A;
        let Some(row) = authorization_request::Entity::find_by_id(state_hash)
            .filter(A::ConnectorId.eq(connector.as_str()))
            .one(&self.db)
            .await
            .map_err(storage_error)?
        else {
            return Ok(None);
        };
        // Whoever deletes the row owns it: of two callbacks with one state, one wins.
        let deleted = authorization_request::Entity::delete_by_id(state_hash)
            .filter(A::ConnectorId.eq(connector.as_str()))
            .exec(&self.db)
            .await
            .map_err(storage_error)?;
        if deleted.rows_affected != 1 {
            return Ok(None);
        }
        rows::pending(row).map(Some)
    }

    async fn insert_held(&self, held: &HeldConsent) -> Result<()> {
        held_consent::ActiveModel::from(rows::held_row(held))
            .insert(&self.db)
            .await
            .map_err(|e| {
                write_error(e, |_| {
                    RegistryError::FailedPrecondition("this consent is held already".into())
                })
            })?;
        Ok(())
    }

    async fn held(&self, request_id: &str) -> Result<Option<HeldConsent>> {
        held_consent::Entity::find_by_id(request_id)
            .one(&self.db)
            .await
            .map_err(storage_error)?
            .map(rows::held)
            .transpose()
    }

    async fn finish_held(
        &self,
        held: &HeldConsent,
        grant: &Grant,
        revoke_replaced: bool,
    ) -> Result<Option<Grant>> {
        let txn = self.begin_write().await?;
        // Whoever deletes the row owns it: of two finishes, one stores the grant.
        let deleted = held_consent::Entity::delete_by_id(held.request_id.as_str())
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        if deleted.rows_affected != 1 {
            return Ok(None);
        }
        let (stored, event, change) = self
            .put_grant_in(&txn.txn, grant, &Actor::Broker, revoke_replaced)
            .await?;
        txn.commit_as(event, change).await?;
        Ok(Some(stored))
    }

    async fn discard_held(
        &self,
        held: &HeldConsent,
        connector: &Connector,
        queue_refresh_token: bool,
        why: &str,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let txn = self.begin_write().await?;
        let deleted = held_consent::Entity::delete_by_id(held.request_id.as_str())
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        if deleted.rows_affected != 1 {
            return Ok(false);
        }
        let queued = match (&held.refresh_token, queue_refresh_token) {
            (Some(refresh), true) => {
                let name = held.sealing_name("refresh");
                queue_revocation(&txn.txn, &held.key, name, refresh, now).await?;
                true
            }
            _ => false,
        };
        // A revocation on the feed makes a broker take the queued refresh token to the provider;
        // its subject names this consent alone, so no cached credential is dropped for it.
        let scope = queued.then(|| ChangeScope {
            subject: Some(format!("consent:{}", held.request_id)),
            ..ChangeScope::connector(&connector.team_id, &connector.id, &connector.uid)
        });
        txn.commit(audit::consent_discarded(actor, held, why, now), scope)
            .await?;
        Ok(true)
    }

    async fn expired_held(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<HeldConsent>> {
        use held_consent::Column as H;
        held_consent::Entity::find()
            .filter(H::ExpiresAt.lte(now))
            .order_by(H::ExpiresAt, Order::Asc)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(storage_error)?
            .into_iter()
            .map(rows::held)
            .collect()
    }
}
