//! What happened: the audit log (filters, readable diffs, CSV), user grants and the issuance
//! ledger, with the revocations they lead to.

use std::collections::BTreeSet;

use axum::{
    extract::Query,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use connect_proto::registry::v1 as pb;
use prost_types::{Struct, Timestamp, value::Kind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Ctx, Fields, bad_request, path_id, time};
use crate::views::{
    AuditPage, AuditRow, ConfirmPage, DiffLine, ENVIRONMENTS, GrantRow, GrantsPage, IssuanceRow,
    IssuancesPage,
};

#[derive(Deserialize, Serialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    target: String,
    /// `YYYY-MM-DDTHH:MM` (a `datetime-local` input, UTC) or RFC 3339.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default, skip_serializing)]
    page_token: String,
}

fn parse_time(field: &str, value: &str) -> Result<Option<Timestamp>, String> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let value = value.trim();
    let parsed = chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(value, f).ok())
                .map(|t| t.and_utc())
                .ok_or(())
        })
        .map_err(|()| format!("{field}: not a time (YYYY-MM-DDTHH:MM, UTC)"))?;
    Ok(Some(Timestamp {
        seconds: parsed.timestamp(),
        nanos: 0,
    }))
}

impl AuditQuery {
    fn request(
        &self,
        page_size: i32,
        page_token: String,
    ) -> Result<pb::ListAuditEventsRequest, String> {
        Ok(pb::ListAuditEventsRequest {
            page_size,
            page_token,
            action: self.action.trim().into(),
            actor: self.actor.trim().into(),
            target: self.target.trim().into(),
            start_time: parse_time("From", &self.since)?,
            end_time: parse_time("Until", &self.until)?,
        })
    }

    fn query_string(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

fn json_of(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(json_of).collect()),
        Some(Kind::StructValue(s)) => struct_json(s),
    }
}

fn struct_json(s: &Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), json_of(v)))
            .collect(),
    )
}

fn shown(value: Option<&Value>) -> String {
    match value {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// Before and after as lines of what changed, key by key.
fn diff(before: Option<&Struct>, after: Option<&Struct>) -> Vec<DiffLine> {
    let before = before.map(struct_json);
    let after = after.map(struct_json);
    let field = |v: &Option<Value>, k: &str| v.as_ref().and_then(|v| v.get(k)).cloned();
    let keys: BTreeSet<String> = [&before, &after]
        .iter()
        .filter_map(|v| v.as_ref().and_then(Value::as_object))
        .flat_map(|o| o.keys().cloned())
        .collect();
    keys.into_iter()
        .filter_map(|key| {
            let (b, a) = (field(&before, &key), field(&after, &key));
            let kind = match (&b, &a) {
                (None, Some(_)) => "added",
                (Some(_), None) => "removed",
                (Some(x), Some(y)) if x != y => "changed",
                _ => return None,
            };
            Some(DiffLine {
                before: shown(b.as_ref()),
                after: shown(a.as_ref()),
                key,
                kind,
            })
        })
        .collect()
}

pub async fn audit(ctx: Ctx, Query(q): Query<AuditQuery>) -> Response {
    let request = match q.request(50, q.page_token.clone()) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let page = match ctx.client.clone().list_audit_events(request).await {
        Ok(page) => page.into_inner(),
        Err(status) => return ctx.failed(status).await,
    };
    ctx.page(&AuditPage {
        l: ctx.layout("Audit", "audit"),
        rows: page
            .events
            .into_iter()
            .map(|e| AuditRow {
                time: time(e.time.as_ref()),
                diff: diff(e.before.as_ref(), e.after.as_ref()),
                actor: e.actor,
                actor_issuer: e.actor_issuer,
                action: e.action,
                target: e.target,
            })
            .collect(),
        csv_query: q.query_string(),
        next_page: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
        action: q.action,
        actor: q.actor,
        target: q.target,
        since: q.since,
        until: q.until,
    })
}

/// A cell a spreadsheet would take for a formula is prefixed with `'` (CSV injection).
fn cell(value: &str) -> String {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_owned(),
    }
}

/// The same filters as `/audit`, every matching event (up to 100 000), newest first.
pub async fn audit_csv(ctx: Ctx, Query(q): Query<AuditQuery>) -> Response {
    const LIMIT: usize = 100_000;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = [
        "time",
        "actor",
        "actor_issuer",
        "action",
        "target",
        "before",
        "after",
    ];
    if writer.write_record(header).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "Cannot write CSV.\n").into_response();
    }
    let mut page_token = String::new();
    let mut written = 0;
    loop {
        let request = match q.request(500, page_token) {
            Ok(r) => r,
            Err(e) => return bad_request(&e),
        };
        let page = match ctx.client.clone().list_audit_events(request).await {
            Ok(page) => page.into_inner(),
            Err(status) => return ctx.failed(status).await,
        };
        for e in &page.events {
            let json =
                |s: Option<&Struct>| s.map(|s| struct_json(s).to_string()).unwrap_or_default();
            let time = e
                .time
                .as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            let record = [
                time,
                cell(&e.actor),
                cell(&e.actor_issuer),
                cell(&e.action),
                cell(&e.target),
                cell(&json(e.before.as_ref())),
                cell(&json(e.after.as_ref())),
            ];
            if writer.write_record(&record).is_err() {
                return (StatusCode::INTERNAL_SERVER_ERROR, "Cannot write CSV.\n").into_response();
            }
            written += 1;
        }
        if page.next_page_token.is_empty() || written >= LIMIT {
            break;
        }
        page_token = page.next_page_token;
    }
    let Ok(body) = writer.into_inner() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "Cannot write CSV.\n").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"connect-audit.csv\"",
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize, Default)]
pub struct Paging {
    #[serde(default)]
    page_token: String,
}

pub async fn grants(ctx: Ctx, Query(paging): Query<Paging>) -> Response {
    let page = match ctx
        .client
        .clone()
        .list_grants(pb::ListGrantsRequest {
            page_size: 50,
            page_token: paging.page_token,
            ..Default::default()
        })
        .await
    {
        Ok(page) => page.into_inner(),
        Err(status) => return ctx.failed(status).await,
    };
    ctx.page(&GrantsPage {
        l: ctx.layout("Grants", "grants"),
        rows: page
            .grants
            .into_iter()
            .map(|g| GrantRow {
                expires: time(g.expire_time.as_ref()),
                connector_id: g.connector_id,
                connector_uid: g.connector_uid,
                user_id: g.user_id,
                project: g.project,
                environment: g.environment,
                state: g.state,
                scopes: g.scopes.join(" "),
                provider_subject: g.provider_subject,
            })
            .collect(),
        next_page: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    })
}

fn revocation_summary(r: &pb::RevokeTokensResponse) -> String {
    format!(
        "{} token(s) found, {} revoked, {} revoked at the provider ({} skipped, {} failed), {} grant(s) deleted.",
        r.tokens_found,
        r.revoked,
        r.provider_revoked,
        r.provider_skipped,
        r.provider_failed,
        r.grants_deleted
    )
}

/// Revokes one user's tokens of a connector (their grants go with them), after one question.
pub async fn revoke_grant(ctx: Ctx, fields: Fields) -> Response {
    let Some(connector) = path_id(fields.get("connector")) else {
        return bad_request("Not a connector id.");
    };
    let user = fields.get("user");
    if user.is_empty() || user.len() > 256 {
        return bad_request("Not a user id.");
    }
    if !fields.confirmed() {
        return ctx.page(&ConfirmPage {
            l: ctx.layout("Revoke a grant", "grants"),
            heading: format!("Revoke {user}'s grant?"),
            consequence: format!(
                "Every token {connector} issued for user {user} is revoked (at the provider where \
                 it can be) and their grants are deleted: they must consent again before the \
                 application can act for them."
            ),
            action: "/grants/revoke".into(),
            button: "Revoke".into(),
            back: "/grants".into(),
            fields: vec![
                ("connector".into(), connector.into()),
                ("user".into(), user.into()),
            ],
        });
    }
    match ctx
        .client
        .clone()
        .revoke_tokens(pb::RevokeTokensRequest {
            connector: connector.into(),
            subject: format!("user:{user}"),
            installation_id: String::new(),
        })
        .await
    {
        Ok(r) => ctx.ok("/grants", revocation_summary(&r.into_inner())),
        Err(status) => ctx.refused("/grants", status).await,
    }
}

#[derive(Deserialize, Default)]
pub struct IssuanceQuery {
    #[serde(default)]
    connector: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    page_token: String,
}

pub async fn issuances(ctx: Ctx, Query(q): Query<IssuanceQuery>) -> Response {
    let mut issuances_client = ctx.client.clone();
    let connectors = super::connectors::all_connectors(&ctx);
    let page = issuances_client.list_issuances(pb::ListIssuancesRequest {
        connector: q.connector.clone(),
        project: q.project.trim().into(),
        environment: q.environment.clone(),
        page_size: 50,
        page_token: q.page_token.clone(),
    });
    let (connectors, page) = match futures::join!(connectors, page) {
        (Ok(c), Ok(p)) => (c, p.into_inner()),
        (Err(s), _) | (_, Err(s)) => return ctx.failed(s).await,
    };
    ctx.page(&IssuancesPage {
        l: ctx.layout("Issuances", "issuances"),
        connectors: connectors.into_iter().map(|c| (c.id, c.uid)).collect(),
        environments: ENVIRONMENTS,
        rows: page
            .issuances
            .into_iter()
            .map(|i| IssuanceRow {
                issued: time(i.issue_time.as_ref()),
                expires: time(i.expire_time.as_ref()),
                token_id: i.token_id,
                connector_id: i.connector_id,
                connector_uid: i.connector_uid,
                project: i.project_id,
                environment: i.environment,
                subject: i.subject,
                installation: i.installation_id,
                revoked: i.revoked,
            })
            .collect(),
        next_page: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
        connector: q.connector,
        project: q.project,
        environment: q.environment,
    })
}

/// Revokes a connector's tokens (all, or one subject's), after one question; the answer's counts
/// are shown.
pub async fn revoke_tokens(ctx: Ctx, fields: Fields) -> Response {
    let Some(connector) = path_id(fields.get("connector")) else {
        return bad_request("Not a connector id.");
    };
    let subject = fields.get("subject").trim().to_owned();
    let back = format!("/issuances?connector={connector}");
    if !fields.confirmed() {
        let whose = if subject.is_empty() {
            "every token".to_owned()
        } else {
            format!("every token of subject {subject}")
        };
        return ctx.page(&ConfirmPage {
            l: ctx.layout("Revoke tokens", "issuances"),
            heading: "Revoke tokens?".into(),
            consequence: format!(
                "{whose} that {connector} issued is revoked: brokers drop their copies at once, \
                 the provider is told where it can be, and callers get new tokens on their next \
                 request."
            ),
            action: "/issuances/revoke".into(),
            button: "Revoke tokens".into(),
            back,
            fields: vec![
                ("connector".into(), connector.into()),
                ("subject".into(), subject),
            ],
        });
    }
    match ctx
        .client
        .clone()
        .revoke_tokens(pb::RevokeTokensRequest {
            connector: connector.into(),
            subject,
            installation_id: String::new(),
        })
        .await
    {
        Ok(r) => ctx.ok(&back, revocation_summary(&r.into_inner())),
        Err(status) => ctx.refused(&back, status).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: serde_json::Value) -> Struct {
        let serde_json::Value::Object(map) = v else {
            panic!()
        };
        Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| {
                    let kind = match v {
                        Value::String(s) => Kind::StringValue(s),
                        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                            values: a
                                .into_iter()
                                .map(|x| prost_types::Value {
                                    kind: Some(Kind::StringValue(x.as_str().unwrap().into())),
                                })
                                .collect(),
                        }),
                        _ => Kind::NullValue(0),
                    };
                    (k, prost_types::Value { kind: Some(kind) })
                })
                .collect(),
        }
    }

    #[test]
    fn a_diff_shows_what_changed_key_by_key() {
        let before =
            s(serde_json::json!({"environments": ["production", "preview"], "project": "prj_a"}));
        let after =
            s(serde_json::json!({"environments": ["production"], "project": "prj_a", "note": "x"}));
        let lines = diff(Some(&before), Some(&after));
        let summary: Vec<_> = lines
            .iter()
            .map(|l| (l.key.as_str(), l.kind, l.before.as_str(), l.after.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "environments",
                    "changed",
                    r#"["production","preview"]"#,
                    r#"["production"]"#
                ),
                ("note", "added", "", "x"),
            ]
        );
        assert_eq!(diff(Some(&before), None).len(), 2);
        assert_eq!(cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(cell("user:ada"), "user:ada");
    }

    #[test]
    fn audit_times_read_as_utc() {
        let t = parse_time("From", "2026-12-04T10:30").unwrap().unwrap();
        assert_eq!(t.seconds, 1_796_380_200);
        assert!(parse_time("From", "yesterday").is_err());
        assert_eq!(parse_time("From", " ").unwrap(), None);
    }
}
