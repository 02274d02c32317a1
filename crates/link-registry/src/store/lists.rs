//! Every list's query, built in one place, so that the store runs it and a test can ask each
//! database for its plan. Each list is a keyset page: the sort key of the last row seen bounds the
//! next page, in a form the database turns into an index range (a row-value comparison where the
//! key has two columns), and an index in the list's order serves it without a sort, so every page
//! costs the same at any size. [`SeaStore::list_plans`] answers with each plan, for the test that
//! fails when a list falls back to a scan or a sort.

use sea_orm::{QueryTrait, Select, Statement};

use super::*;
use crate::domain::{
    page::{AuditKey, GrantPageKey, InstallationKey, IssuanceKey},
    store::{AuditFilter, GrantFilter, IssuanceFilter},
};

pub(super) fn projects_page(
    team: &TeamId,
    page: &PageRequest<ProjectId>,
) -> Select<project::Entity> {
    let mut select = project::Entity::find()
        .filter(project::Column::TeamId.eq(team.as_str()))
        .order_by(project::Column::Id, Order::Asc)
        .limit(page.limit());
    if let Some(after) = &page.after {
        select = select.filter(project::Column::Id.gt(after.as_str()));
    }
    select
}

pub(super) fn connectors_page(
    team: &TeamId,
    page: &PageRequest<ConnectorId>,
) -> Select<connector::Entity> {
    let mut select = connector::Entity::find()
        .filter(connector::Column::TeamId.eq(team.as_str()))
        .order_by(connector::Column::Id, Order::Asc)
        .limit(page.limit());
    if let Some(after) = &page.after {
        select = select.filter(connector::Column::Id.gt(after.as_str()));
    }
    select
}

/// Links in (connector id, project id) order, optionally of one connector and/or one project
/// (by id), after a page key.
pub(super) fn links_page(
    team: &TeamId,
    connector: Option<&ConnectorId>,
    project: Option<&ProjectId>,
    page: &PageRequest<LinkKey>,
) -> SelectStatement {
    use project_link::Column as L;
    let column = |c: L| Expr::col((project_link::Entity, c));
    let mut query = links::link_query(team);
    if let Some(connector) = connector {
        query.and_where(column(L::ConnectorId).eq(connector.as_str()));
    }
    if let Some(project) = project {
        query.and_where(column(L::ProjectId).eq(project.as_str()));
    }
    match (connector, &page.after) {
        // One connector: a range of its projects (the primary key), or nothing or everything
        // when the key is another connector's.
        (Some(connector), Some(after)) => match connector.cmp(&after.connector_id) {
            std::cmp::Ordering::Equal => {
                query.and_where(column(L::ProjectId).gt(after.project_id.as_str()));
            }
            std::cmp::Ordering::Less => {
                query.and_where(Expr::val(1).eq(0));
            }
            std::cmp::Ordering::Greater => {}
        },
        // One row-value comparison: an index range on (team, connector, project) and on
        // (team, project, connector) alike, where `a > x OR (a = x AND b > y)` is none.
        (None, Some(after)) => {
            query.and_where(
                Expr::tuple([column(L::ConnectorId), column(L::ProjectId)]).gt(Expr::tuple([
                    Expr::val(after.connector_id.as_str()),
                    Expr::val(after.project_id.as_str()),
                ])),
            );
        }
        (_, None) => {}
    }
    query
        .order_by((project_link::Entity, L::ConnectorId), Order::Asc)
        .order_by((project_link::Entity, L::ProjectId), Order::Asc)
        .limit(page.limit());
    query
}

/// Newest first; filters narrow the walk down the team's (team, id) index.
pub(super) fn audit_page(
    team: &TeamId,
    filter: &AuditFilter,
    page: &PageRequest<AuditKey>,
) -> Select<audit_event::Entity> {
    use audit_event::Column as A;
    let mut select = audit_event::Entity::find()
        .filter(A::TeamId.eq(team.as_str()))
        .order_by(A::Id, Order::Desc)
        .limit(page.limit());
    if let Some(action) = &filter.action {
        select = select.filter(A::Action.eq(action.as_str()));
    }
    if let Some(actor) = &filter.actor {
        select = select.filter(A::Actor.eq(actor.as_str()));
    }
    if let Some(target) = &filter.target {
        select = select.filter(A::Target.eq(target.as_str()));
    }
    if let Some(since) = filter.since {
        select = select.filter(A::CreatedAt.gte(since));
    }
    if let Some(until) = filter.until {
        select = select.filter(A::CreatedAt.lt(until));
    }
    if let Some(AuditKey(before)) = page.after {
        select = select.filter(audit_event::Column::Id.lt(before));
    }
    select
}

pub(super) fn issuances_page(
    team: &TeamId,
    filter: &IssuanceFilter,
    page: &PageRequest<IssuanceKey>,
) -> Select<issuance::Entity> {
    let mut select = issuance::Entity::find()
        .filter(issuance::Column::TeamId.eq(team.as_str()))
        .order_by(issuance::Column::Id, Order::Desc)
        .limit(page.limit());
    if let Some(connector) = &filter.connector {
        select = select.filter(issuance::Column::ConnectorId.eq(connector.as_str()));
    }
    if let Some(project) = &filter.project {
        select = select.filter(issuance::Column::ProjectId.eq(project.as_str()));
    }
    if let Some(environment) = filter.environment {
        select = select.filter(issuance::Column::Environment.eq(environment.as_str()));
    }
    if let Some(IssuanceKey(before)) = page.after {
        select = select.filter(issuance::Column::Id.lt(before));
    }
    select
}

pub(super) fn installations_page(
    connector: &ConnectorId,
    page: &PageRequest<InstallationKey>,
) -> Select<installation::Entity> {
    let mut select = installation::Entity::find()
        .filter(installation::Column::ConnectorId.eq(connector.as_str()))
        .order_by(installation::Column::InstallationId, Order::Asc)
        .limit(page.limit());
    if let Some(InstallationKey(after)) = &page.after {
        select = select.filter(installation::Column::InstallationId.gt(after.as_str()));
    }
    select
}

pub(super) fn grants_page(
    team: &TeamId,
    filter: &GrantFilter,
    page: &PageRequest<GrantPageKey>,
) -> Select<grant::Entity> {
    use grant::Column as G;
    let mut select = grant::Entity::find()
        .filter(G::TeamId.eq(team.as_str()))
        .order_by(G::Id, Order::Asc)
        .limit(page.limit());
    if let Some(connector) = &filter.connector {
        select = select.filter(G::ConnectorId.eq(connector.as_str()));
    }
    if let Some(user) = &filter.user_id {
        select = select.filter(G::UserId.eq(user.as_str()));
    }
    if let Some(environment) = filter.environment {
        select = select.filter(G::Environment.eq(environment.as_str()));
    }
    if let Some(project) = &filter.project {
        select = select.filter(G::ProjectId.eq(project.as_str()));
    }
    if let Some(GrantPageKey(after)) = page.after {
        select = select.filter(G::Id.gt(after));
    }
    select
}

impl SeaStore {
    /// The plan of every list query (a later page, each filter), as each database explains it:
    /// one line per step, `(list, lines)`. On PostgreSQL sequential scans are disabled first, so
    /// that a plan shows whether an index can serve the query however small the tables are.
    pub async fn list_plans(&self) -> Result<Vec<(&'static str, Vec<String>)>> {
        fn parse<T>(v: std::result::Result<T, String>) -> Result<T> {
            v.map_err(|e| rows::corrupt("plan sample", e))
        }
        fn page<K>(after: Option<K>) -> PageRequest<K> {
            PageRequest { size: 50, after }
        }
        let team = parse(TeamId::parse("team_plan"))?;
        let connector = parse(ConnectorId::parse("conn_000000000000000000000000"))?;
        let project = parse(ProjectId::parse("prj_plan"))?;
        let link_after = Some(LinkKey {
            connector_id: connector.clone(),
            project_id: project.clone(),
        });
        let backend = self.backend();
        let statements: Vec<(&'static str, Statement)> = vec![
            (
                "projects",
                projects_page(&team, &page(Some(project.clone()))).build(backend),
            ),
            (
                "connectors",
                connectors_page(&team, &page(Some(connector.clone()))).build(backend),
            ),
            (
                "links",
                backend.build(&links_page(&team, None, None, &page(link_after.clone()))),
            ),
            (
                "links by connector",
                backend.build(&links_page(
                    &team,
                    Some(&connector),
                    None,
                    &page(link_after.clone()),
                )),
            ),
            (
                "links by project",
                backend.build(&links_page(&team, None, Some(&project), &page(link_after))),
            ),
            (
                "links, first page",
                backend.build(&links_page(&team, None, None, &page(None))),
            ),
            (
                "links by connector, first page",
                backend.build(&links_page(&team, Some(&connector), None, &page(None))),
            ),
            (
                "audit events",
                audit_page(&team, &AuditFilter::default(), &page(Some(AuditKey(1_000))))
                    .build(backend),
            ),
            (
                "audit events of one action",
                audit_page(
                    &team,
                    &AuditFilter {
                        action: Some("project.attach".into()),
                        since: Some(DateTime::UNIX_EPOCH),
                        ..AuditFilter::default()
                    },
                    &page(Some(AuditKey(1_000))),
                )
                .build(backend),
            ),
            (
                "issuances",
                issuances_page(
                    &team,
                    &IssuanceFilter::default(),
                    &page(Some(IssuanceKey(9))),
                )
                .build(backend),
            ),
            (
                "issuances by connector",
                issuances_page(
                    &team,
                    &IssuanceFilter {
                        connector: Some(connector.clone()),
                        ..Default::default()
                    },
                    &page(Some(IssuanceKey(9))),
                )
                .build(backend),
            ),
            (
                "issuances by project",
                issuances_page(
                    &team,
                    &IssuanceFilter {
                        project: Some(project.clone()),
                        ..Default::default()
                    },
                    &page(Some(IssuanceKey(9))),
                )
                .build(backend),
            ),
            (
                "installations",
                installations_page(
                    &connector,
                    &page(Some(InstallationKey(parse(
                        crate::domain::types::InstallationId::parse("1"),
                    )?))),
                )
                .build(backend),
            ),
            (
                "grants",
                grants_page(&team, &GrantFilter::default(), &page(Some(GrantPageKey(9))))
                    .build(backend),
            ),
        ];
        self.explain(statements).await
    }

    /// Each statement's plan, `(name, lines)`, with sequential scans disabled on PostgreSQL.
    pub(super) async fn explain(
        &self,
        statements: Vec<(&'static str, Statement)>,
    ) -> Result<Vec<(&'static str, Vec<String>)>> {
        let txn = self.db.begin().await.map_err(storage_error)?;
        let postgres = self.backend() == DbBackend::Postgres;
        if postgres {
            txn.execute_unprepared("SET LOCAL enable_seqscan = off")
                .await
                .map_err(storage_error)?;
        } else {
            // SQLite plans a statement with the schema the connection last read: `EXPLAIN QUERY
            // PLAN` reads no table, so on a connection opened before a migration it would show
            // the old schema's plan. A read first brings the schema up to date.
            txn.execute_unprepared("SELECT count(*) FROM sqlite_master")
                .await
                .map_err(storage_error)?;
        }
        let mut plans = Vec::with_capacity(statements.len());
        for (name, statement) in statements {
            let prefix = if postgres {
                "EXPLAIN "
            } else {
                "EXPLAIN QUERY PLAN "
            };
            let explain = Statement {
                sql: format!("{prefix}{}", statement.sql),
                ..statement
            };
            let rows = txn.query_all_raw(explain).await.map_err(storage_error)?;
            let column = if postgres { "QUERY PLAN" } else { "detail" };
            let lines = rows
                .iter()
                .map(|row| row.try_get::<String>("", column))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(storage_error)?;
            plans.push((name, lines));
        }
        txn.rollback().await.map_err(storage_error)?;
        Ok(plans)
    }
}
