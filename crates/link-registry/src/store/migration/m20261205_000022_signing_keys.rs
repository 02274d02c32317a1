//! The keys brokers sign the tokens Connect issues with (Connect as an OIDC issuer): one row per
//! key, its private half sealed under the master key like every secret, its public half as a JWK.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000022_signing_keys"
    }
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Kid,
    Alg,
    PrivateKey,
    PublicJwk,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use SigningKeys as K;
        manager
            .create_table(
                Table::create()
                    .table(K::Table)
                    .col(
                        ColumnDef::new(K::Kid)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(K::Alg).string_len(16).not_null())
                    .col(ColumnDef::new(K::PrivateKey).text().not_null())
                    .col(ColumnDef::new(K::PublicJwk).text().not_null())
                    .col(
                        ColumnDef::new(K::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SigningKeys::Table).to_owned())
            .await
    }
}
