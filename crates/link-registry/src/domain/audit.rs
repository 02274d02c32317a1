//! What each change writes to the audit log. Stores call these inside the transaction of the
//! change, so the action names and the shape of `before`/`after` are defined once for every
//! backend. Secrets only ever appear here by name and keyed fingerprint.
//!
//! A creation's `after` and a deletion's `before` are the whole record; a change of an existing
//! record keeps only what changed ([`changed`]): the target names the record, and the unchanged
//! rest is in the events before it.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{
    model::{
        Actor, ApiKeyRecord, Connector, Grant, HeldConsent, Installation, NewAuditEvent, Project,
        ProjectEnvironment, ProjectLink, RoleBinding, Team,
    },
    store::RevokeFilter,
};

pub fn team_created(actor: &Actor, team: &Team) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(team.id.clone()),
        actor: actor.clone(),
        action: "team.create",
        target: format!("team:{}", team.id),
        before: None,
        after: Some(json!({ "id": team.id, "slug": team.slug, "issuer": team.issuer })),
        time: team.created_at,
    }
}

pub fn key_created(actor: &Actor, key: &ApiKeyRecord) -> NewAuditEvent {
    NewAuditEvent {
        team_id: key.team_id.clone(),
        actor: actor.clone(),
        action: "key.create",
        target: format!("key:{}", key.id),
        before: None,
        after: Some(json!({
            "id": key.id, "role": key.role.as_str(), "team_id": key.team_id,
            "expires_at": key.expires_at,
        })),
        time: key.created_at,
    }
}

pub fn binding_created(actor: &Actor, binding: &RoleBinding) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(binding.team_id.clone()),
        actor: actor.clone(),
        action: "binding.create",
        target: format!("binding:{}", binding.id),
        before: None,
        after: Some(binding.audit_view()),
        time: binding.created_at,
    }
}

pub fn binding_deleted(actor: &Actor, binding: &RoleBinding, at: DateTime<Utc>) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(binding.team_id.clone()),
        actor: actor.clone(),
        action: "binding.delete",
        target: format!("binding:{}", binding.id),
        before: Some(binding.audit_view()),
        after: None,
        time: at,
    }
}

pub fn key_revoked(actor: &Actor, key: &ApiKeyRecord, at: DateTime<Utc>) -> NewAuditEvent {
    NewAuditEvent {
        team_id: key.team_id.clone(),
        actor: actor.clone(),
        action: "key.revoke",
        target: format!("key:{}", key.id),
        before: Some(json!({ "revoked": false })),
        after: Some(json!({ "revoked": true })),
        time: at,
    }
}

pub fn project_created(actor: &Actor, project: &Project) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(project.team_id.clone()),
        actor: actor.clone(),
        action: "project.create",
        target: format!("project:{}", project.id),
        before: None,
        after: Some(json!({ "id": project.id, "name": project.name })),
        time: project.created_at,
    }
}

pub fn connector_created(actor: &Actor, connector: &Connector) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(connector.team_id.clone()),
        actor: actor.clone(),
        action: "connector.create",
        target: format!("connector:{}", connector.id),
        before: None,
        after: Some(connector.audit_view()),
        time: connector.created_at,
    }
}

/// The parts of two views that differ: the members whose values changed, compared member by
/// member through nested objects (a map of config keys keeps only the keys that changed); a
/// member only one side has stays on that side. Equal views give two empty objects.
pub fn changed(before: Value, after: Value) -> (Value, Value) {
    match (before, after) {
        (Value::Object(mut before), Value::Object(mut after)) => {
            let (mut was, mut is) = (Map::new(), Map::new());
            let names: std::collections::BTreeSet<String> =
                before.keys().chain(after.keys()).cloned().collect();
            for name in names {
                match (before.remove(&name), after.remove(&name)) {
                    (Some(b), Some(a)) if b == a => {}
                    (Some(b @ Value::Object(_)), Some(a @ Value::Object(_))) => {
                        let (b, a) = changed(b, a);
                        was.insert(name.clone(), b);
                        is.insert(name, a);
                    }
                    (b, a) => {
                        if let Some(b) = b {
                            was.insert(name.clone(), b);
                        }
                        if let Some(a) = a {
                            is.insert(name, a);
                        }
                    }
                }
            }
            (Value::Object(was), Value::Object(is))
        }
        (before, after) => (before, after),
    }
}

/// `before`/`after` of a change to an existing record: only what changed.
fn change(before: Value, after: Value) -> (Option<Value>, Option<Value>) {
    let (before, after) = changed(before, after);
    (Some(before), Some(after))
}

pub fn connector_updated(actor: &Actor, before: &Connector, after: &Connector) -> NewAuditEvent {
    let (was, is) = change(before.audit_view(), after.audit_view());
    NewAuditEvent {
        team_id: Some(after.team_id.clone()),
        actor: actor.clone(),
        action: "connector.update",
        target: format!("connector:{}", after.id),
        before: was,
        after: is,
        time: after.updated_at,
    }
}

pub fn connector_deleted(
    actor: &Actor,
    connector: &Connector,
    removed_links: &[ProjectLink],
    time: DateTime<Utc>,
) -> NewAuditEvent {
    let mut before = connector.audit_view();
    before["links"] = removed_links
        .iter()
        .map(ProjectLink::audit_view)
        .collect::<Vec<_>>()
        .into();
    NewAuditEvent {
        team_id: Some(connector.team_id.clone()),
        actor: actor.clone(),
        action: "connector.delete",
        target: format!("connector:{}", connector.id),
        before: Some(before),
        after: None,
        time,
    }
}

pub fn project_attached(
    actor: &Actor,
    before: Option<&ProjectLink>,
    after: &ProjectLink,
) -> NewAuditEvent {
    let (was, is) = match before {
        Some(before) => change(before.audit_view(), after.audit_view()),
        None => (None, Some(after.audit_view())),
    };
    NewAuditEvent {
        team_id: Some(after.team_id.clone()),
        actor: actor.clone(),
        action: "project.attach",
        target: after.audit_target(),
        before: was,
        after: is,
        time: after.updated_at,
    }
}

pub fn project_detached(actor: &Actor, link: &ProjectLink, time: DateTime<Utc>) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(link.team_id.clone()),
        actor: actor.clone(),
        action: "project.detach",
        target: link.audit_target(),
        before: Some(link.audit_view()),
        after: None,
        time,
    }
}

pub fn installation_created(actor: &Actor, installation: &Installation) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(installation.team_id.clone()),
        actor: actor.clone(),
        action: "installation.create",
        target: installation.audit_target(),
        before: None,
        after: Some(installation.audit_view()),
        time: installation.created_at,
    }
}

pub fn installation_deleted(
    actor: &Actor,
    installation: &Installation,
    time: DateTime<Utc>,
) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(installation.team_id.clone()),
        actor: actor.clone(),
        action: "installation.delete",
        target: installation.audit_target(),
        before: Some(installation.audit_view()),
        after: None,
        time,
    }
}

/// What a revocation covered and how many ledger rows it marked; never a credential.
pub fn tokens_revoked(
    actor: &Actor,
    connector: &Connector,
    filter: &RevokeFilter,
    found: u64,
    revoked: u64,
    time: DateTime<Utc>,
) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(connector.team_id.clone()),
        actor: actor.clone(),
        action: "tokens.revoke",
        target: format!("connector:{}", connector.id),
        before: None,
        after: Some(json!({
            "subject": filter.subject,
            "installation_id": filter.installation_id,
            "tokens_found": found,
            "revoked": revoked,
        })),
        time,
    }
}

/// A held consent discarded (another user finished it, or nobody did in time): its tokens are
/// revoked (`tokens.revoke`, the target naming the consent).
pub fn consent_discarded(
    actor: &Actor,
    held: &HeldConsent,
    why: &str,
    time: DateTime<Utc>,
) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(held.key.team_id.clone()),
        actor: actor.clone(),
        action: "tokens.revoke",
        target: format!("consent:{}", held.request_id),
        before: Some(held.audit_view()),
        after: Some(json!({ "discarded": why, "connector_id": held.key.connector_id })),
        time,
    }
}

/// A user's consent stored (`grant.create`), or stored again over an earlier one (`grant.replace`).
pub fn grant_stored(actor: &Actor, before: Option<&Grant>, after: &Grant) -> NewAuditEvent {
    let (was, is) = match before {
        Some(before) => change(before.audit_view(), after.audit_view()),
        None => (None, Some(after.audit_view())),
    };
    NewAuditEvent {
        team_id: Some(after.key.team_id.clone()),
        actor: actor.clone(),
        action: if before.is_some() {
            "grant.replace"
        } else {
            "grant.create"
        },
        target: after.key.audit_target(),
        before: was,
        after: is,
        time: after.updated_at,
    }
}

/// A grant's state changed (`grant.refresh_failed`, `grant.needs_consent`, `grant.recovered`).
pub fn grant_state_changed(before: &Grant, after: &Grant) -> NewAuditEvent {
    use super::model::GrantState as S;
    let (was, is) = change(before.audit_view(), after.audit_view());
    NewAuditEvent {
        team_id: Some(after.key.team_id.clone()),
        actor: Actor::Broker,
        action: match after.state {
            S::Active => "grant.recovered",
            S::RefreshFailed => "grant.refresh_failed",
            S::NeedsConsent => "grant.needs_consent",
        },
        target: after.key.audit_target(),
        before: was,
        after: is,
        time: after.updated_at,
    }
}

pub fn grants_deleted(
    actor: &Actor,
    connector: &Connector,
    gone: &[Grant],
    time: DateTime<Utc>,
) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(connector.team_id.clone()),
        actor: actor.clone(),
        action: "grant.revoke",
        target: format!("connector:{}", connector.id),
        before: Some(json!({
            "grants": gone.iter().map(Grant::audit_view).collect::<Vec<_>>(),
        })),
        after: None,
        time,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::changed;

    #[test]
    fn a_change_keeps_only_what_changed_member_by_member() {
        let before = json!({
            "id": "conn_1", "name": "stripe", "suspended": false,
            "config": { "token_url": "https://a.example/t", "scope": "read" },
            "secrets": { "client_secret": { "fingerprint": "f1" }, "old": { "fingerprint": "f0" } },
            "environments": ["preview"],
        });
        let after = json!({
            "id": "conn_1", "name": "Renamed", "suspended": false,
            "config": { "token_url": "https://a.example/t", "scope": "write", "audience": "x" },
            "secrets": { "client_secret": { "fingerprint": "f2" } },
            "environments": ["preview", "production"],
        });
        let (was, is) = changed(before, after);
        assert_eq!(
            was,
            json!({
                "name": "stripe",
                "config": { "scope": "read" },
                "secrets": { "client_secret": { "fingerprint": "f1" }, "old": { "fingerprint": "f0" } },
                "environments": ["preview"],
            })
        );
        assert_eq!(
            is,
            json!({
                "name": "Renamed",
                "config": { "scope": "write", "audience": "x" },
                "secrets": { "client_secret": { "fingerprint": "f2" } },
                "environments": ["preview", "production"],
            })
        );
        let same = json!({ "a": 1, "b": { "c": [1, 2] } });
        assert_eq!(changed(same.clone(), same), (json!({}), json!({})));
        // A member that turns from an object into something else is shown whole on both sides.
        assert_eq!(
            changed(json!({ "a": { "b": 1 } }), json!({ "a": null })),
            (json!({ "a": { "b": 1 } }), json!({ "a": null }))
        );
    }
}

/// The `prev_hash` of the first event ever written.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event's fields as stored, which its chain hash covers.
#[derive(Clone, Copy, Debug)]
pub struct ChainedFields<'a> {
    pub team_id: Option<&'a str>,
    pub actor: &'a str,
    pub actor_issuer: Option<&'a str>,
    pub action: &'a str,
    pub target: &'a str,
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
    pub time: DateTime<Utc>,
}

/// The audit log's hash chain: each event's `hash` is the SHA-256 (hex) of a JSON array of a
/// version tag, the previous event's hash and the event's stored fields, its time to the
/// microsecond (what both databases keep). Editing, removing or inserting an event breaks the
/// chain at that event or the one after it.
pub fn chain_hash(prev_hash: &str, f: &ChainedFields<'_>) -> String {
    use sha2::{Digest, Sha256};
    let time = f.time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let canonical = json!([
        "connect.audit.v1",
        prev_hash,
        f.team_id,
        f.actor,
        f.actor_issuer,
        f.action,
        f.target,
        f.before,
        f.after,
        time,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

#[cfg(test)]
mod laws {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::changed;

    /// Applies a change's `before`/`after` (as [`changed`] keeps them) to the record before it.
    fn replay(record: Value, was: &Value, is: &Value) -> Value {
        match (record, was, is) {
            (Value::Object(mut record), Value::Object(was), Value::Object(is)) => {
                for name in was.keys() {
                    if !is.contains_key(name) {
                        record.remove(name);
                    }
                }
                for (name, value) in is {
                    let merged = match (record.remove(name), was.get(name)) {
                        (Some(old @ Value::Object(_)), Some(w @ Value::Object(_)))
                            if value.is_object() =>
                        {
                            replay(old, w, value)
                        }
                        _ => value.clone(),
                    };
                    record.insert(name.clone(), merged);
                }
                Value::Object(record)
            }
            (_, _, is) => is.clone(),
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    fn record() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-e]", json(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        /// An audited change replays: the record before it, with the change's `before` and
        /// `after` applied, is the record after it; equal records change nothing.
        #[test]
        fn audit_diffs_replay_to_the_stored_record(before in record(), after in record()) {
            let (was, is) = changed(before.clone(), after.clone());
            prop_assert_eq!(replay(before.clone(), &was, &is), after);
            let (none_was, none_is) = changed(before.clone(), before.clone());
            prop_assert_eq!(none_was, Value::Object(Map::new()));
            prop_assert_eq!(none_is, Value::Object(Map::new()));
        }
    }
}

pub fn environment_created(actor: &Actor, environment: &ProjectEnvironment) -> NewAuditEvent {
    NewAuditEvent {
        team_id: Some(environment.team_id.clone()),
        actor: actor.clone(),
        action: "environment.create",
        target: environment.audit_target(),
        before: None,
        after: Some(environment.audit_view()),
        time: environment.created_at,
    }
}

pub fn environment_updated(
    actor: &Actor,
    before: &ProjectEnvironment,
    after: &ProjectEnvironment,
    time: DateTime<Utc>,
) -> NewAuditEvent {
    let (was, is) = change(before.audit_view(), after.audit_view());
    NewAuditEvent {
        team_id: Some(after.team_id.clone()),
        actor: actor.clone(),
        action: "environment.update",
        target: after.audit_target(),
        before: was,
        after: is,
        time,
    }
}

/// The environment as it was, and the links it was taken out of (`after`).
pub fn environment_deleted(
    actor: &Actor,
    environment: &ProjectEnvironment,
    updated: &[ProjectLink],
    removed: &[ProjectLink],
    time: DateTime<Utc>,
) -> NewAuditEvent {
    let connectors = |links: &[ProjectLink]| {
        links
            .iter()
            .map(|l| l.connector_uid.to_string())
            .collect::<Vec<_>>()
    };
    NewAuditEvent {
        team_id: Some(environment.team_id.clone()),
        actor: actor.clone(),
        action: "environment.delete",
        target: environment.audit_target(),
        before: Some(environment.audit_view()),
        after: Some(json!({
            "links_updated": connectors(updated),
            "links_removed": connectors(removed),
        })),
        time,
    }
}
