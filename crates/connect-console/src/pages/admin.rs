//! The team's API keys (admins only): their records, and revoking one.

use axum::{extract::Path, response::Response};
use connect_proto::registry::v1 as pb;

use super::{Ctx, Fields, bad_request, path_id, time};
use crate::views::{ConfirmPage, KeyRow, KeysPage};

pub async fn keys(ctx: Ctx) -> Response {
    let keys = match ctx
        .client
        .clone()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
    {
        Ok(keys) => keys.into_inner().keys,
        Err(status) => return ctx.failed(status).await,
    };
    let now = chrono::Utc::now().timestamp();
    let can_write = ctx.session.data.role() == Some("admin");
    ctx.page(&KeysPage {
        l: ctx.layout("API keys", "keys"),
        rows: keys
            .into_iter()
            .map(|k| {
                let state = if k.revoke_time.is_some() {
                    "revoked"
                } else if k.expire_time.as_ref().is_some_and(|t| t.seconds <= now) {
                    "expired"
                } else {
                    "active"
                };
                KeyRow {
                    revocable: can_write && state == "active" && k.role != "broker",
                    created: time(k.create_time.as_ref()),
                    expires: time(k.expire_time.as_ref()),
                    last_used: time(k.last_use_time.as_ref()),
                    teams: k.teams.join(", "),
                    id: k.id,
                    role: k.role,
                    state,
                }
            })
            .collect(),
    })
}

pub async fn revoke_key(ctx: Ctx, Path(id): Path<String>, fields: Fields) -> Response {
    let Some(id) = path_id(&id) else {
        return bad_request("Not a key id.");
    };
    if !fields.confirmed() {
        return ctx.page(&ConfirmPage {
            l: ctx.layout("Revoke a key", "keys"),
            heading: format!("Revoke {id}?"),
            consequence: "Every tool and person using this key is refused within seconds, on \
                          every registry. A revoked key cannot be restored: its users need a new one."
                .into(),
            action: format!("/keys/{id}/revoke"),
            button: "Revoke key".into(),
            back: "/keys".into(),
            fields: Vec::new(),
        });
    }
    match ctx
        .client
        .clone()
        .revoke_api_key(pb::RevokeApiKeyRequest { id: id.into() })
        .await
    {
        Ok(key) => ctx.ok("/keys", format!("Revoked {}.", key.into_inner().id)),
        Err(status) => ctx.refused("/keys", status).await,
    }
}
