//! API keys: stored by digest, revoked and expiring, and when each was last used; and the role
//! bindings of people signed in with an operator issuer.

use super::*;

#[async_trait]
impl KeyStore for SeaStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        api_key::ActiveModel::from(api_key::Model {
            id: key.id.to_string(),
            team_id: key.team_id.as_ref().map(ToString::to_string),
            role: key.role.as_str().to_owned(),
            key_hash: key.key_hash.clone(),
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            last_used_at: key.last_used_at,
            broker_teams: key.broker_teams.as_ref().map(|teams| {
                serde_json::to_string(&teams.iter().map(TeamId::as_str).collect::<Vec<_>>())
                    .expect("a list of strings serializes")
            }),
        })
        .insert(&txn.txn)
        .await
        .map_err(|e| {
            write_error(e, |_| {
                RegistryError::internal("inserting an api key", "key id or hash collision")
            })
        })?;
        txn.commit(audit::key_created(actor, key), None).await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(key_hash))
            .one(&self.db)
            .await
            .map_err(storage_error)?;
        row.map(rows::api_key).transpose()
    }

    async fn api_keys(&self, team: Option<&TeamId>) -> Result<Vec<ApiKeyRecord>> {
        let mut select = api_key::Entity::find().order_by(api_key::Column::Id, Order::Asc);
        if let Some(team) = team {
            select = select.filter(api_key::Column::TeamId.eq(team.as_str()));
        }
        let found = select.all(&self.db).await.map_err(storage_error)?;
        found.into_iter().map(rows::api_key).collect()
    }

    async fn revoke_api_key(
        &self,
        id: &KeyId,
        actor: &Actor,
        at: DateTime<Utc>,
    ) -> Result<ApiKeyRecord> {
        let txn = self.begin_write().await?;
        let row = api_key::Entity::find_by_id(id.as_str())
            .one(&txn.txn)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| RegistryError::not_found(Resource::Key, id))?;
        let mut key = rows::api_key(row)?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(at);
            api_key::Entity::update_many()
                .col_expr(api_key::Column::RevokedAt, Expr::value(at))
                .filter(api_key::Column::Id.eq(id.as_str()))
                .exec(&txn.txn)
                .await
                .map_err(storage_error)?;
            txn.commit(audit::key_revoked(actor, &key, at), None)
                .await?;
        }
        Ok(key)
    }

    async fn touch_api_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<()> {
        let txn = self.begin_write().await?;
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(at))
            .filter(api_key::Column::Id.eq(id.as_str()))
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        txn.commit_unaudited().await
    }

    async fn insert_role_binding(&self, binding: &RoleBinding, actor: &Actor) -> Result<()> {
        let txn = self.begin_write().await?;
        role_binding::ActiveModel::from(rows::role_binding_row(binding))
            .insert(&txn.txn)
            .await
            .map_err(|e| {
                write_error(e, |_| RegistryError::AlreadyExists {
                    resource: Resource::RoleBinding,
                    what: format!(
                        "for {} of {}",
                        match &binding.who {
                            BindingSubject::Subject(s) => format!("subject '{s}'"),
                            BindingSubject::Group(g) => format!("group '{g}'"),
                        },
                        binding.issuer
                    ),
                })
            })?;
        txn.commit(audit::binding_created(actor, binding), None)
            .await
    }

    async fn role_bindings(&self, team: &TeamId) -> Result<Vec<RoleBinding>> {
        role_binding::Entity::find()
            .filter(role_binding::Column::TeamId.eq(team.as_str()))
            .order_by(role_binding::Column::CreatedAt, Order::Asc)
            .order_by(role_binding::Column::Id, Order::Asc)
            .all(&self.db)
            .await
            .map_err(storage_error)?
            .into_iter()
            .map(rows::role_binding)
            .collect()
    }

    async fn bindings_matching(
        &self,
        issuer: &str,
        subject: &str,
        groups: &[String],
    ) -> Result<Vec<RoleBinding>> {
        use role_binding::Column as B;
        let mut who = Condition::any().add(B::Subject.eq(subject));
        // Bounded: a token's groups are at most what its size allows, and empty names never match.
        let groups: Vec<&str> = groups
            .iter()
            .map(String::as_str)
            .filter(|g| !g.is_empty())
            .take(1000)
            .collect();
        if !groups.is_empty() {
            who = who.add(B::GroupName.is_in(groups));
        }
        role_binding::Entity::find()
            .filter(B::Issuer.eq(issuer))
            .filter(who)
            .order_by(B::TeamId, Order::Asc)
            .all(&self.db)
            .await
            .map_err(storage_error)?
            .into_iter()
            .map(rows::role_binding)
            .collect()
    }

    async fn delete_role_binding(
        &self,
        team: &TeamId,
        id: &str,
        actor: &Actor,
        at: DateTime<Utc>,
    ) -> Result<RoleBinding> {
        let txn = self.begin_write().await?;
        let binding = role_binding::Entity::find_by_id(id)
            .filter(role_binding::Column::TeamId.eq(team.as_str()))
            .one(&txn.txn)
            .await
            .map_err(storage_error)?
            .map(rows::role_binding)
            .transpose()?
            .ok_or_else(|| RegistryError::not_found(Resource::RoleBinding, id))?;
        role_binding::Entity::delete_by_id(id)
            .exec(&txn.txn)
            .await
            .map_err(storage_error)?;
        txn.commit(audit::binding_deleted(actor, &binding, at), None)
            .await?;
        Ok(binding)
    }
}
