//! Connectors and their installations: create and update requests in; `Connector`,
//! `Installation` and the capability table's rows out.

use connect_proto::registry::v1 as pb;

use super::{Violations, timestamp};
use crate::domain::{
    RegistryError,
    model::{Connector, Installation},
    service::{ConnectorUpdate, NewConnector, NewInstallation},
    types::{
        ConfigMap, ConnectorRef, ConnectorType, ConnectorUid, DisplayName, InstallationId,
        SecretInput, truncate,
    },
};

impl TryFrom<pb::CreateConnectorRequest> for NewConnector {
    type Error = RegistryError;

    fn try_from(req: pb::CreateConnectorRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let uid = v.check("uid", ConnectorUid::parse(&req.uid));
        if !req.r#type.is_empty()
            && let Some(kind) = v.check("type", ConnectorType::parse(&req.r#type))
            && let Some(uid) = &uid
            && kind != uid.kind()
        {
            v.push(
                "type",
                format!(
                    "type must be the type part of uid ('{}')",
                    uid.kind().as_str()
                ),
            );
        }
        let name = match (&uid, req.name.is_empty()) {
            (Some(uid), true) => v.check("name", DisplayName::parse(uid.name())),
            (None, true) => None, // defaults from the uid, which is already reported
            (_, false) => v.check("name", DisplayName::parse(&req.name)),
        };
        let config = v.check_map("config", ConfigMap::parse(&req.config));
        let secrets = v.check_map("secrets", SecretInput::parse(req.secrets));
        let value = match (uid, name, config, secrets) {
            (Some(uid), Some(name), Some(config), Some(secrets)) => Some(NewConnector {
                uid,
                name,
                config,
                secrets,
            }),
            _ => None,
        };
        v.finish(value)
    }
}

/// An `UpdateConnectorRequest`: the connector and the fields its mask names.
#[derive(Debug)]
pub struct ConnectorEdit {
    pub connector: ConnectorRef,
    pub update: ConnectorUpdate,
}

impl TryFrom<pb::UpdateConnectorRequest> for ConnectorEdit {
    type Error = RegistryError;

    fn try_from(req: pb::UpdateConnectorRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let connector = v.check("connector", ConnectorRef::parse(&req.connector));
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.push(
                "update_mask",
                "update_mask must name at least one of name, config, secrets, suspended, default_installation_id",
            );
        }
        let mut update = ConnectorUpdate::default();
        let mut secrets = Some(req.secrets);
        for path in &paths {
            match path.as_str() {
                "name" => update.name = v.check("name", DisplayName::parse(&req.name)),
                "config" => update.config = v.check_map("config", ConfigMap::parse(&req.config)),
                "secrets" => {
                    if let Some(secrets) = secrets.take() {
                        update.secrets = v.check_map("secrets", SecretInput::parse(secrets));
                    }
                }
                "suspended" => update.suspended = Some(req.suspended),
                "default_installation_id" => {
                    update.default_installation_id = if req.default_installation_id.is_empty() {
                        Some(None)
                    } else {
                        v.check(
                            "default_installation_id",
                            InstallationId::parse(&req.default_installation_id),
                        )
                        .map(Some)
                    }
                }
                other => v.push(
                    "update_mask",
                    format!(
                        "unknown path {:?}: only name, config, secrets, suspended and default_installation_id can change",
                        truncate(other, 40)
                    ),
                ),
            }
        }
        v.finish(connector.map(|connector| ConnectorEdit { connector, update }))
    }
}

/// A `CreateInstallationRequest`: the connector and the installation to add to it.
#[derive(Debug)]
pub struct InstallationRequest {
    pub connector: ConnectorRef,
    pub installation: NewInstallation,
}

impl TryFrom<pb::CreateInstallationRequest> for InstallationRequest {
    type Error = RegistryError;

    fn try_from(req: pb::CreateInstallationRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let connector = v.check("connector", ConnectorRef::parse(&req.connector));
        if req.installation_id.is_empty() {
            v.push("installation_id", "installation_id must not be empty");
        }
        let display_name = if req.display_name.is_empty() {
            Some(None)
        } else {
            v.check("display_name", DisplayName::parse(&req.display_name))
                .map(Some)
        };
        let config = v.check_map("config", ConfigMap::parse(&req.config));
        let secrets = v.check_map("secrets", SecretInput::parse(req.secrets));
        let value = match (connector, display_name, config, secrets) {
            (Some(connector), Some(display_name), Some(config), Some(secrets)) => {
                Some(InstallationRequest {
                    connector,
                    installation: NewInstallation {
                        id: req.installation_id,
                        display_name,
                        config,
                        secrets,
                    },
                })
            }
            _ => None,
        };
        v.finish(value)
    }
}

/// An installation as the wire shows it; `default` says whether it is its connector's default.
pub fn installation(i: Installation, default: Option<&InstallationId>) -> pb::Installation {
    pb::Installation {
        is_default: default == Some(&i.id),
        secret_names: i.secret_names(),
        connector_id: i.connector_id.to_string(),
        connector_uid: i.connector_uid.to_string(),
        installation_id: i.id.to_string(),
        display_name: i.display_name.to_string(),
        config: i.config.as_map().clone().into_iter().collect(),
        owner_id: i.team_id.to_string(),
        create_time: Some(timestamp(i.created_at)),
    }
}

impl From<Connector> for pb::Connector {
    fn from(c: Connector) -> Self {
        Self {
            secret_names: c.secret_names(),
            r#type: c.uid.kind().as_str().to_owned(),
            id: c.id.to_string(),
            uid: c.uid.to_string(),
            name: c.name.to_string(),
            config: c.config.as_map().clone().into_iter().collect(),
            owner_id: c.team_id.to_string(),
            create_time: Some(timestamp(c.created_at)),
            update_time: Some(timestamp(c.updated_at)),
            suspended: c.suspended,
            default_installation_id: c
                .default_installation_id
                .map(|i| i.to_string())
                .unwrap_or_default(),
        }
    }
}

/// A connector type's row of the capability table as `ListConnectorTypes` answers it.
pub fn connector_type(row: &connect_types::Capabilities) -> pb::ConnectorTypeCapabilities {
    use connect_types::Revocation;
    let names = |keys: &[connect_types::capabilities::Key], only_required: bool| {
        keys.iter()
            .filter(|k| k.required || !only_required)
            .map(|k| k.name.to_owned())
            .collect()
    };
    pb::ConnectorTypeCapabilities {
        r#type: row.connector_type.to_owned(),
        description: row.description.to_owned(),
        subjects: row.subjects.iter().map(|s| s.as_str().to_owned()).collect(),
        installations: row.installations.as_str().to_owned(),
        cross_installation: row.cross_installation,
        resources: row.resources,
        revocation: row.revocation != Revocation::None,
        revocation_config_key: match row.revocation {
            Revocation::WhenConfigured(key) => key.to_owned(),
            Revocation::None | Revocation::Always => String::new(),
        },
        config_keys: names(row.config_keys, false),
        secret_keys: names(row.secret_keys, false),
        required_config_keys: names(row.config_keys, true),
        required_secret_keys: names(row.secret_keys, true),
        key_descriptions: row
            .config_keys
            .iter()
            .chain(row.secret_keys)
            .map(|k| (k.name.to_owned(), k.description.to_owned()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_create_connector_request_names_every_bad_field() {
        let req = pb::CreateConnectorRequest {
            uid: "api-key/stripe".into(),
            r#type: "oauth2".into(),
            name: String::new(),
            config: [("bad key".to_owned(), "x".to_owned())].into(),
            secrets: [("api_key".to_owned(), String::new())].into(),
        };
        let Err(RegistryError::InvalidArgument(violations)) = NewConnector::try_from(req) else {
            panic!("expected InvalidArgument");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["type", "config[bad key]", "secrets[api_key]"]);
    }

    #[test]
    fn a_connector_name_defaults_to_the_uid_name() {
        let req = pb::CreateConnectorRequest {
            uid: "api-key/stripe".into(),
            ..Default::default()
        };
        let new = NewConnector::try_from(req).unwrap();
        assert_eq!(new.name.as_str(), "stripe");
    }

    #[test]
    fn update_masks_must_name_known_fields() {
        let req = pb::UpdateConnectorRequest {
            connector: "api-key/stripe".into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["uid".into()],
            }),
            ..Default::default()
        };
        let Err(RegistryError::InvalidArgument(violations)) = ConnectorEdit::try_from(req) else {
            panic!("expected InvalidArgument");
        };
        assert_eq!(violations[0].field, "update_mask");
    }
}
