//! Versioned schema migrations. A migration, once released, is never edited: changes come as new
//! migrations appended to [`Migrator::migrations`], one file each.
//!
//! The schema carries the invariants: ids and uids are unique per team, a link's connector and
//! project must belong to the link's team (composite foreign keys), deleting a connector deletes
//! its links, and a link's environment mask is never empty.

mod m20261125_000001_initial;
mod m20261126_000002_key_lifecycle;
mod m20261126_000003_change_feed;
mod m20261127_000004_issuances;
mod m20261127_000005_connector_suspension;
mod m20261203_000006_installations;
mod m20261203_000007_grants;
mod m20261203_000008_list_indexes;
mod m20261203_000009_keyed_link_tables;
mod m20261204_000010_held_consents;
mod m20261204_000011_key_check;
mod m20261204_000012_project_grants;
mod m20261204_000013_runtime_keys;
mod m20261204_000014_departed_connectors;
mod m20261204_000015_provider_subjects;
mod m20261204_000016_role_bindings;
mod m20261204_000017_audit_actor_issuer;
mod m20261204_000018_audit_chain;
mod m20261205_000019_link_expiry;
mod m20261205_000020_link_limits;
mod m20261205_000021_custom_environments;
mod m20261205_000022_signing_keys;

use sea_orm_migration::prelude::*;

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261126_000002_key_lifecycle::Migration),
            Box::new(m20261126_000003_change_feed::Migration),
            Box::new(m20261127_000004_issuances::Migration),
            Box::new(m20261127_000005_connector_suspension::Migration),
            Box::new(m20261203_000006_installations::Migration),
            Box::new(m20261203_000007_grants::Migration),
            Box::new(m20261203_000008_list_indexes::Migration),
            Box::new(m20261203_000009_keyed_link_tables::Migration),
            Box::new(m20261204_000010_held_consents::Migration),
            Box::new(m20261204_000011_key_check::Migration),
            Box::new(m20261204_000012_project_grants::Migration),
            Box::new(m20261204_000013_runtime_keys::Migration),
            Box::new(m20261204_000014_departed_connectors::Migration),
            Box::new(m20261204_000015_provider_subjects::Migration),
            Box::new(m20261204_000016_role_bindings::Migration),
            Box::new(m20261204_000017_audit_actor_issuer::Migration),
            Box::new(m20261204_000018_audit_chain::Migration),
            Box::new(m20261205_000019_link_expiry::Migration),
            Box::new(m20261205_000020_link_limits::Migration),
            Box::new(m20261205_000021_custom_environments::Migration),
            Box::new(m20261205_000022_signing_keys::Migration),
        ]
    }
}
