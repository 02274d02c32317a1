//! What the commands print: aligned tables for people, JSON with the proto JSON field names for
//! programs.

use connect_proto::registry::v1 as pb;
use serde_json::{Map, Value, json};

/// `google.protobuf.Timestamp` as RFC 3339 (UTC), as proto JSON writes it.
pub fn time(at: Option<&prost_types::Timestamp>) -> Value {
    at.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
        .map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        })
}

/// A timestamp for a table: to the second.
pub fn short_time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

pub fn connector(c: &pb::Connector) -> Value {
    json!({
        "id": c.id,
        "uid": c.uid,
        "type": c.r#type,
        "name": c.name,
        "config": c.config,
        "secretNames": c.secret_names,
        "suspended": c.suspended,
        "defaultInstallationId": c.default_installation_id,
        "ownerId": c.owner_id,
        "createTime": time(c.create_time.as_ref()),
        "updateTime": time(c.update_time.as_ref()),
    })
}

pub fn connector_type(t: &pb::ConnectorTypeCapabilities) -> Value {
    json!({
        "type": t.r#type,
        "description": t.description,
        "subjects": t.subjects,
        "installations": t.installations,
        "crossInstallation": t.cross_installation,
        "resources": t.resources,
        "revocation": t.revocation,
        "revocationConfigKey": t.revocation_config_key,
        "configKeys": t.config_keys,
        "secretKeys": t.secret_keys,
        "requiredConfigKeys": t.required_config_keys,
        "requiredSecretKeys": t.required_secret_keys,
        "keyDescriptions": t.key_descriptions,
    })
}

pub fn project(p: &pb::Project) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "ownerId": p.owner_id,
        "createTime": time(p.create_time.as_ref()),
    })
}

pub fn link(l: &pb::ProjectLink) -> Value {
    json!({
        "connectorId": l.connector_id,
        "connectorUid": l.connector_uid,
        "projectId": l.project_id,
        "projectName": l.project_name,
        "environments": l.environments,
        "ownerId": l.owner_id,
        "createTime": time(l.create_time.as_ref()),
        "updateTime": time(l.update_time.as_ref()),
        "expireTime": time(l.expire_time.as_ref()),
        "allowedScopes": l.allowed_scopes,
        "allowedResources": l.allowed_resources,
        "allowedInstallations": l.allowed_installations,
        "allowedSubjects": l.allowed_subjects,
        "maxIssuancesPerHour": l.max_issuances_per_hour,
        "lastIssueTime": time(l.last_issue_time.as_ref()),
    })
}

pub fn environment(e: &pb::Environment) -> Value {
    json!({
        "id": e.id,
        "slug": e.slug,
        "name": e.name,
        "project": e.project,
        "createTime": time(e.create_time.as_ref()),
    })
}

/// A link's ceilings and quota in a few words (`scopes read; 10/h`); `None` when it has none.
pub fn limits(l: &pb::ProjectLink) -> Option<String> {
    let mut parts = Vec::new();
    for (name, values) in [
        ("scopes", &l.allowed_scopes),
        ("resources", &l.allowed_resources),
        ("installations", &l.allowed_installations),
        ("subjects", &l.allowed_subjects),
    ] {
        if !values.is_empty() {
            parts.push(format!("{name} {}", values.join(",")));
        }
    }
    if l.max_issuances_per_hour > 0 {
        parts.push(format!("{}/h", l.max_issuances_per_hour));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

pub fn audit_event(e: &pb::AuditEvent) -> Value {
    json!({
        "id": e.id,
        "ownerId": e.owner_id,
        "actor": e.actor,
        "actorIssuer": e.actor_issuer,
        "action": e.action,
        "target": e.target,
        "before": e.before.as_ref().map_or(Value::Null, structure),
        "after": e.after.as_ref().map_or(Value::Null, structure),
        "time": time(e.time.as_ref()),
    })
}

fn structure(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect::<Map<_, _>>(),
    )
}

fn value(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => structure(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value).collect()),
    }
}

pub fn issuance(i: &pb::Issuance) -> Value {
    json!({
        "tokenId": i.token_id,
        "connectorId": i.connector_id,
        "connectorUid": i.connector_uid,
        "ownerId": i.owner_id,
        "projectId": i.project_id,
        "environment": i.environment,
        "subject": i.subject,
        "installationId": i.installation_id,
        "scopes": i.scopes,
        "issueTime": time(i.issue_time.as_ref()),
        "expireTime": time(i.expire_time.as_ref()),
        "revoked": i.revoked,
        "providerRevocation": i.provider_revocation,
    })
}

pub fn installation(i: &pb::Installation) -> Value {
    json!({
        "connectorId": i.connector_id,
        "connectorUid": i.connector_uid,
        "installationId": i.installation_id,
        "displayName": i.display_name,
        "config": i.config,
        "secretNames": i.secret_names,
        "ownerId": i.owner_id,
        "createTime": time(i.create_time.as_ref()),
        "isDefault": i.is_default,
    })
}

pub fn revocation(r: &pb::RevokeTokensResponse) -> Value {
    json!({
        "tokensFound": r.tokens_found,
        "revoked": r.revoked,
        "providerRevoked": r.provider_revoked,
        "providerSkipped": r.provider_skipped,
        "providerFailed": r.provider_failed,
        "grantsDeleted": r.grants_deleted,
    })
}

pub fn grant(g: &pb::Grant) -> Value {
    json!({
        "connectorId": g.connector_id,
        "connectorUid": g.connector_uid,
        "ownerId": g.owner_id,
        "project": g.project,
        "userId": g.user_id,
        "providerSubject": g.provider_subject,
        "environment": g.environment,
        "installationId": g.installation_id,
        "scopes": g.scopes,
        "state": g.state,
        "expireTime": time(g.expire_time.as_ref()),
        "refreshable": g.refreshable,
        "lastError": g.last_error,
        "lastRefreshTime": time(g.last_refresh_time.as_ref()),
        "createTime": time(g.create_time.as_ref()),
        "updateTime": time(g.update_time.as_ref()),
        "version": g.version,
    })
}

/// A revocation as a person reads it.
pub fn revocation_summary(r: &pb::RevokeTokensResponse) -> String {
    let mut text = format!(
        "{} of {} credentials revoked (at the provider: {} revoked, {} skipped, {} failed)",
        r.revoked, r.tokens_found, r.provider_revoked, r.provider_skipped, r.provider_failed
    );
    if r.grants_deleted > 0 {
        text.push_str(&format!("; {} user grants deleted", r.grants_deleted));
    }
    text
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Environments as a person reads them: `preview, production`.
pub fn environments(list: &[String]) -> String {
    list.join(", ")
}
