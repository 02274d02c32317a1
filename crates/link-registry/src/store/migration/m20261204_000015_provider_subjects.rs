//! The provider account a grant acts as (the `sub` the provider's OpenID `id_token` or userinfo
//! names), on grants and on consents waiting to be finished; empty when the provider told none.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000015_provider_subjects"
    }
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    ProviderSubject,
}

#[derive(DeriveIden)]
enum HeldConsents {
    Table,
    ProviderSubject,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Grants::Table)
                    .add_column(ColumnDef::new(Grants::ProviderSubject).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(HeldConsents::Table)
                    .add_column(ColumnDef::new(HeldConsents::ProviderSubject).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(HeldConsents::Table)
                    .drop_column(HeldConsents::ProviderSubject)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Grants::Table)
                    .drop_column(Grants::ProviderSubject)
                    .to_owned(),
            )
            .await
    }
}
