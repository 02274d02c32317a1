//! Audit events, whose before/after JSON becomes a `google.protobuf.Struct`.

use std::collections::BTreeMap;

use connect_proto::registry::v1 as pb;
use prost_types::{ListValue, Struct, value::Kind};
use serde_json::Value;

use super::{Violations, time_of, timestamp};
use crate::domain::{RegistryError, model::AuditEvent, store::AuditFilter};

impl TryFrom<&pb::ListAuditEventsRequest> for AuditFilter {
    type Error = RegistryError;

    fn try_from(req: &pb::ListAuditEventsRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let mut text = |field: &str, value: &str| {
            if value.len() > 512 {
                v.push(field, format!("{field} must be at most 512 bytes"));
            }
            (!value.is_empty()).then(|| value.to_owned())
        };
        let filter = AuditFilter {
            action: text("action", &req.action),
            actor: text("actor", &req.actor),
            target: text("target", &req.target),
            since: None,
            until: None,
        };
        let mut time = |field: &str, t: Option<prost_types::Timestamp>| match t {
            None => None,
            Some(t) => {
                let parsed = time_of(Some(t));
                if parsed.is_none() {
                    v.push(field, format!("{field} is not a valid time"));
                }
                parsed
            }
        };
        let since = time("start_time", req.start_time);
        let until = time("end_time", req.end_time);
        if let (Some(since), Some(until)) = (since, until)
            && until < since
        {
            v.push("end_time", "end_time must not be before start_time");
        }
        v.finish(Some(AuditFilter {
            since,
            until,
            ..filter
        }))
    }
}

impl From<AuditEvent> for pb::AuditEvent {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id.to_string(),
            owner_id: e.team_id.map(|t| t.to_string()).unwrap_or_default(),
            actor: e.actor,
            actor_issuer: e.actor_issuer.unwrap_or_default(),
            action: e.action,
            target: e.target,
            before: e.before.and_then(json_struct),
            after: e.after.and_then(json_struct),
            time: Some(timestamp(e.time)),
            prev_hash: e.prev_hash.unwrap_or_default(),
            hash: e.hash.unwrap_or_default(),
        }
    }
}

fn json_struct(value: Value) -> Option<Struct> {
    match value {
        Value::Object(map) => Some(Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| (k, json_value(v)))
                .collect::<BTreeMap<_, _>>(),
        }),
        _ => None,
    }
}

fn json_value(value: Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        object @ Value::Object(_) => Kind::StructValue(json_struct(object).unwrap_or_default()),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_json_becomes_a_struct() {
        let s = json_struct(serde_json::json!({"a": [1, "x", null], "b": {"c": true}})).unwrap();
        assert!(matches!(s.fields["a"].kind, Some(Kind::ListValue(_))));
        assert!(matches!(s.fields["b"].kind, Some(Kind::StructValue(_))));
    }
}
