//! A team's connectors. Changes lock the connector row on PostgreSQL, so concurrent changes of
//! one connector and its links apply one after the other.

use super::*;

impl SeaStore {
    /// Finds a connector inside a write transaction; on PostgreSQL the row stays locked until
    /// the transaction ends.
    pub(super) async fn connector_for_update(
        &self,
        txn: &DatabaseTransaction,
        team: &TeamId,
        connector: &ConnectorRef,
    ) -> Result<Connector> {
        let mut select = connector::Entity::find()
            .filter(connector::Column::TeamId.eq(team.as_str()))
            .filter(connector_condition(connector));
        if self.backend() == DbBackend::Postgres {
            select = select.lock_exclusive();
        }
        // `all`, not `one`: the key is unique, and `one` adds a bound `LIMIT` that makes SQLite
        // re-prepare the statement on every call (see `authorize.rs`).
        let row = select
            .all(txn)
            .await
            .map_err(storage_error)?
            .into_iter()
            .next();
        row.map(rows::connector)
            .transpose()?
            .ok_or_else(|| RegistryError::not_found(Resource::Connector, connector))
    }
}

fn connector_condition(connector: &ConnectorRef) -> Condition {
    match connector {
        ConnectorRef::Id(id) => Condition::all().add(connector::Column::Id.eq(id.as_str())),
        ConnectorRef::Uid(uid) => Condition::all().add(connector::Column::Uid.eq(uid.as_str())),
    }
}

#[async_trait]
impl ConnectorStore for SeaStore {
    async fn insert_connector(&self, c: &Connector, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        connector::ActiveModel::from(rows::connector_row(c))
            .insert(&txn.txn)
            .await
            .map_err(|e| {
                write_error(e, |_| RegistryError::AlreadyExists {
                    resource: Resource::Connector,
                    what: format!("with uid '{}'", c.uid),
                })
            })?;
        let scope = ChangeScope::connector(&c.team_id, &c.id, &c.uid);
        txn.commit(audit::connector_created(actor, c), Some(scope))
            .await
    }

    async fn connector(&self, team: &TeamId, c: &ConnectorRef) -> Result<Option<Connector>> {
        let row = connector::Entity::find()
            .filter(connector::Column::TeamId.eq(team.as_str()))
            .filter(connector_condition(c))
            .one(&self.db)
            .await
            .map_err(storage_error)?;
        row.map(rows::connector).transpose()
    }

    async fn connectors(
        &self,
        team: &TeamId,
        page: &PageRequest<ConnectorId>,
    ) -> Result<Vec<Connector>> {
        let found = super::lists::connectors_page(team, page)
            .all(&self.db)
            .await
            .map_err(storage_error)?;
        found.into_iter().map(rows::connector).collect()
    }

    async fn update_connector(
        &self,
        team: &TeamId,
        c: &ConnectorRef,
        actor: &Actor,
        edit: ConnectorEdit,
    ) -> Result<Connector> {
        let txn = self.begin_write().await?;
        let before = self.connector_for_update(&txn.txn, team, c).await?;
        let sealed_dependents = self.installations_with_secrets(&txn.txn, &before).await?
            + self.grants_of(&txn.txn, &before).await?;
        let after = edit(&before, sealed_dependents)?;
        if let Some(id) = &after.default_installation_id
            && after.default_installation_id != before.default_installation_id
            && !self.installation_exists(&txn.txn, &before, id).await?
        {
            return Err(RegistryError::not_found(Resource::Installation, id));
        }
        let row = rows::connector_row(&after).into_active_model().reset_all();
        row.update(&txn.txn).await.map_err(|e| {
            write_error(e, |_| RegistryError::AlreadyExists {
                resource: Resource::Connector,
                what: format!("with uid '{}'", after.uid),
            })
        })?;
        let scope = ChangeScope::connector(team, &after.id, &after.uid);
        txn.commit(
            audit::connector_updated(actor, &before, &after),
            Some(scope),
        )
        .await?;
        Ok(after)
    }

    async fn reseal_connectors(&self, reseal: ConnectorReseal) -> Result<u64> {
        let txn = self.begin_write().await?;
        let rows = connector::Entity::find()
            .filter(connector::Column::Secrets.ne("{}"))
            .all(&txn.txn)
            .await
            .map_err(storage_error)?;
        let mut rewritten = 0;
        for row in rows {
            if let Some(next) = reseal(&rows::connector(row)?)? {
                rows::connector_row(&next)
                    .into_active_model()
                    .reset_all()
                    .update(&txn.txn)
                    .await
                    .map_err(storage_error)?;
                rewritten += 1;
            }
        }
        txn.commit_unaudited().await?;
        Ok(rewritten)
    }

    async fn delete_connector(
        &self,
        team: &TeamId,
        c: &ConnectorRef,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<(Connector, u64)> {
        use project_link::Column as L;
        let txn = self.begin_write().await?;
        let connector = self.connector_for_update(&txn.txn, team, c).await?;
        let links = fetch_links(
            &txn.txn,
            &link_query(team)
                .and_where(
                    Expr::col((project_link::Entity, L::ConnectorId)).eq(connector.id.as_str()),
                )
                .to_owned(),
        )
        .await?;
        let departed = self.keep_to_revoke(&txn.txn, &connector, now).await?;
        // Links, installations, grants and queued revocations go with their connector by the
        // foreign keys' ON DELETE CASCADE.
        connector::Entity::delete_by_id(connector.id.as_str())
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        let scope = ChangeScope::connector(team, &connector.id, &connector.uid);
        let event = audit::connector_deleted(actor, &connector, &links, now);
        let mut changes = vec![(event.action, scope.clone())];
        if departed > 0 {
            // Brokers drop what they cached of it and take the kept refresh tokens to the
            // provider.
            changes.push(("tokens.revoke", scope));
        }
        txn.commit_changes(event, changes).await?;
        Ok((connector, links.len() as u64))
    }
}

impl SeaStore {
    /// Keeps what a connector about to be deleted leaves to revoke: when it has a
    /// `revocation_url`, the refresh tokens of its grants, of its held consents and of its queue
    /// go to `departed_revocations`, with the connector's row as their tombstone (their sealed
    /// values open under it as they did). Answers with the number kept.
    async fn keep_to_revoke(
        &self,
        txn: &DatabaseTransaction,
        connector: &Connector,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        if connector.config.get("revocation_url").is_none() {
            return Ok(0);
        }
        let id = connector.id.as_str();
        let mut kept: Vec<(StoredSecret, String)> = Vec::new();
        for row in grant::Entity::find()
            .filter(grant::Column::ConnectorId.eq(id))
            .all(txn)
            .await
            .map_err(storage_error)?
        {
            let g = rows::grant(row)?;
            if let Some(refresh) = g.refresh_token {
                kept.push((refresh, g.key.sealing_name("refresh")));
            }
        }
        for row in held_consent::Entity::find()
            .filter(held_consent::Column::ConnectorId.eq(id))
            .all(txn)
            .await
            .map_err(storage_error)?
        {
            let h = rows::held(row)?;
            if let Some(refresh) = h.refresh_token.clone() {
                kept.push((refresh, h.sealing_name("refresh")));
            }
        }
        for row in grant_revocation::Entity::find()
            .filter(grant_revocation::Column::ConnectorId.eq(id))
            .all(txn)
            .await
            .map_err(storage_error)?
        {
            let sealed = serde_json::from_str(&row.refresh_token)
                .map_err(|e| rows::corrupt("stored grant revocation", e.to_string()))?;
            kept.push((sealed, row.sealing_name));
        }
        if kept.is_empty() {
            return Ok(0);
        }
        departed_connector::ActiveModel::from(departed_connector::Model::from(
            rows::connector_row(connector),
        ))
        .insert(txn)
        .await
        .map_err(storage_error)?;
        let count = kept.len() as u64;
        for (refresh, sealing_name) in kept {
            departed_revocation::ActiveModel {
                connector_id: sea_orm::Set(id.to_owned()),
                refresh_token: sea_orm::Set(
                    serde_json::to_string(&refresh).expect("a sealed secret serializes"),
                ),
                sealing_name: sea_orm::Set(sealing_name),
                created_at: sea_orm::Set(now),
                ..Default::default()
            }
            .insert(txn)
            .await
            .map_err(storage_error)?;
        }
        Ok(count)
    }
}
