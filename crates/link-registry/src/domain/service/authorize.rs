//! The runtime decision the broker asks for, in the documented order.

use tracing::Instrument;

use super::*;

/// The claims of a verified token, and the connector asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizeQuery {
    pub owner_id: TeamId,
    pub project_id: ProjectId,
    pub environment: Environment,
    pub issuer: String,
    pub connector: ConnectorRef,
    pub installation: InstallationAsk,
}

/// Which installation a token is asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum InstallationAsk {
    /// The connector's default, if it has one.
    #[default]
    Default,
    /// `*`: every installation; answered without one (the broker knows which types allow it).
    Every,
    One(InstallationId),
}

/// One step of the runtime decision as `ExplainAccess` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessCheck {
    pub name: &'static str,
    pub outcome: CheckOutcome,
    pub detail: String,
    /// What would make a failed check pass; empty otherwise.
    pub fix: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    Pass,
    Fail,
    /// Not reached: an earlier check failed.
    Skip,
}

impl CheckOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Skip => "skip",
        }
    }
}

/// The checks of the decision, in its order.
pub const CHECKS: &[&str] = &[
    "team",
    "connector",
    "link",
    "environment",
    "link_expiry",
    "connector_active",
    "installation",
    "ceilings",
    "type_rules",
];

/// Where the decision reports each check. `Authorize` passes [`Silent`] (no text is built on the
/// broker's path); `ExplainAccess` a [`Recorded`] list. Both run [`Registry::decide`], so the
/// explanation cannot drift from the decision.
pub(crate) trait CheckSink: Send {
    fn pass(&mut self, name: &'static str, detail: impl FnOnce() -> String);
    fn fail(
        &mut self,
        name: &'static str,
        detail: impl FnOnce() -> String,
        fix: impl FnOnce() -> String,
    );
}

pub(crate) struct Silent;

impl CheckSink for Silent {
    fn pass(&mut self, _: &'static str, _: impl FnOnce() -> String) {}
    fn fail(&mut self, _: &'static str, _: impl FnOnce() -> String, _: impl FnOnce() -> String) {}
}

#[derive(Default)]
pub(crate) struct Recorded(Vec<AccessCheck>);

impl CheckSink for Recorded {
    fn pass(&mut self, name: &'static str, detail: impl FnOnce() -> String) {
        self.0.push(AccessCheck {
            name,
            outcome: CheckOutcome::Pass,
            detail: detail(),
            fix: String::new(),
        });
    }

    fn fail(
        &mut self,
        name: &'static str,
        detail: impl FnOnce() -> String,
        fix: impl FnOnce() -> String,
    ) {
        self.0.push(AccessCheck {
            name,
            outcome: CheckOutcome::Fail,
            detail: detail(),
            fix: fix(),
        });
    }
}

impl Recorded {
    /// Every check of [`CHECKS`]: those not reached as skipped.
    fn finish(mut self) -> Vec<AccessCheck> {
        for name in CHECKS {
            if !self.0.iter().any(|c| c.name == *name) {
                self.0.push(AccessCheck {
                    name,
                    outcome: CheckOutcome::Skip,
                    detail: String::new(),
                    fix: String::new(),
                });
            }
        }
        self.0
    }
}

/// What `ExplainAccess` is asked: a deployment of the caller's team.
#[derive(Clone, Debug)]
pub struct ExplainQuery {
    pub project: ProjectRef,
    pub environment: Environment,
    pub connector: ConnectorRef,
    pub installation: InstallationAsk,
    pub subject: connect_types::SubjectKind,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
}

/// The decision as `ExplainAccess` answers it: the checks, and why `GetToken` would end in a
/// refusal (`None`: allowed).
#[derive(Debug)]
pub struct Explanation {
    pub checks: Vec<AccessCheck>,
    pub refusal: Option<Refusal>,
}

/// Why a `GetToken` would be refused.
#[derive(Debug)]
pub enum Refusal {
    /// The registry's own answer to the broker.
    Decision(RegistryError),
    /// A ceiling of the link, which the broker applies.
    Ceiling(connect_types::Reason),
    /// A rule of the connector type's row, which the broker applies.
    TypeRule(connect_types::Reason),
}

/// The environment a token names, and what it stands for: a custom environment named by its slug
/// resolved to its id (links store ids); otherwise the same.
#[derive(Clone, Copy, Debug)]
pub(super) struct AskedEnvironment {
    pub named: Environment,
    pub resolved: Environment,
}

impl Registry {
    /// Resolves a custom environment's slug against the project's environments; a built-in
    /// environment, an id, or a slug the project does not have stays as named (and matches no
    /// link).
    pub(super) async fn asked_environment(
        &self,
        team: &TeamId,
        project: &ProjectId,
        named: Environment,
    ) -> Result<AskedEnvironment> {
        let resolved = match named.custom() {
            Some(slug) if !slug.is_id() => self
                .store
                .environment(team, project, slug)
                .await?
                .map_or(named, |e| Environment::Custom(e.id)),
            _ => named,
        };
        Ok(AskedEnvironment { named, resolved })
    }
}

/// The connector the lookup found and the project's link to it, when that link is enabled for
/// `environment`; the documented "no" otherwise (unknown connector, not linked, not enabled).
pub(super) fn linked(
    found: crate::domain::store::Authorizing,
    asked: &ConnectorRef,
    project: &ProjectId,
    asked_environment: AskedEnvironment,
    now: DateTime<Utc>,
    checks: &mut impl CheckSink,
) -> Result<(Connector, ProjectLink)> {
    let AskedEnvironment {
        named: environment,
        resolved,
    } = asked_environment;
    let Some(connector) = found.connector else {
        checks.fail(
            "connector",
            || format!("the team has no connector {asked}"),
            || "connect list (the team's connectors), or connect create <type>/<name>".into(),
        );
        return Err(RegistryError::not_found(Resource::Connector, asked));
    };
    checks.pass("connector", || {
        format!("{} ({})", connector.uid, connector.id)
    });
    let Some(link) = found.link else {
        checks.fail(
            "link",
            || format!("{} is not linked to project {project}", connector.uid),
            || {
                format!(
                    "connect attach {} --project {project} -e {environment}",
                    connector.uid
                )
            },
        );
        return Err(RegistryError::ClientNotLinkedToProject {
            connector: connector.uid.to_string(),
            project_id: project.to_string(),
        });
    };
    checks.pass("link", || {
        format!(
            "{} is linked to {} ({project})",
            connector.uid, link.project_name
        )
    });
    if !link.enables(&resolved) {
        // A slug the project has no environment for: nothing to attach yet.
        let unknown = environment.custom().is_some_and(|c| !c.is_id()) && resolved == environment;
        checks.fail(
            "environment",
            || {
                if unknown {
                    format!("project {project} has no environment '{environment}'")
                } else {
                    format!(
                        "the link enables {} only, not {environment}",
                        link.environment_names().join(", ")
                    )
                }
            },
            || {
                let mut keep = link.environment_names();
                keep.push(environment.to_string());
                let attach = format!(
                    "connect attach {} --project {project} -e {}",
                    connector.uid,
                    keep.join(",")
                );
                if unknown {
                    format!("connect envs create {environment} --project {project}, then {attach}")
                } else {
                    attach
                }
            },
        );
        return Err(RegistryError::ClientNotEnabledForEnvironment {
            connector: connector.uid.to_string(),
            project_id: project.to_string(),
            environment: environment.to_string(),
        });
    }
    checks.pass("environment", || {
        format!("the link enables {}", link.environment_names().join(", "))
    });
    match link.expires_at {
        Some(at) if link.expired(now) => {
            checks.fail(
                "link_expiry",
                || format!("the link expired at {}", at.to_rfc3339()),
                || {
                    format!(
                        "connect attach {} --project {project} -e {} --for 8h (or without --for: no expiry)",
                        connector.uid,
                        link.environment_names().join(",")
                    )
                },
            );
            return Err(RegistryError::LinkExpired {
                connector: connector.uid.to_string(),
                project_id: project.to_string(),
                expired_at: at.to_rfc3339(),
            });
        }
        Some(at) => checks.pass("link_expiry", || {
            format!("the link expires at {}", at.to_rfc3339())
        }),
        None => checks.pass("link_expiry", || "the link does not expire".into()),
    }
    Ok((connector, link))
}

impl Registry {
    /// The runtime decision, in the documented order. Any "no" stops it.
    pub async fn authorize(
        &self,
        caller: &Caller,
        query: &AuthorizeQuery,
    ) -> Result<Authorization> {
        caller.serves(&query.owner_id)?;
        self.decide(query, &mut Silent).await
    }

    /// Why a deployment of the caller's team would (not) get a connector's token: the checks of
    /// [`Registry::decide`] with what each found, then the type's rules for what was asked.
    pub async fn explain_access(
        &self,
        caller: &Caller,
        asked: ExplainQuery,
    ) -> Result<Explanation> {
        let team_id = caller.readable_team()?.clone();
        let team = self
            .store
            .team(&team_id)
            .await?
            .ok_or_else(|| RegistryError::not_found(Resource::Team, &team_id))?;
        // A project the team does not have is asked about by its id, as a token naming it is.
        let project_id = match self.store.project(&team_id, &asked.project).await? {
            Some(project) => project.id,
            None => asked
                .project
                .id
                .clone()
                .ok_or_else(|| RegistryError::not_found(Resource::Project, &asked.project))?,
        };
        let query = AuthorizeQuery {
            owner_id: team_id,
            project_id,
            environment: asked.environment,
            issuer: team.issuer.to_string(),
            connector: asked.connector.clone(),
            installation: asked.installation.clone(),
        };
        let mut checks = Recorded::default();
        let refusal = match self.decide(&query, &mut checks).await {
            Ok(authorization) => match ceilings(&authorization, &asked, &mut checks) {
                Some(reason) => Some(Refusal::Ceiling(reason)),
                None => type_rules(&authorization, &asked, &mut checks).map(Refusal::TypeRule),
            },
            // Unavailable storage is no explanation.
            Err(e @ RegistryError::StorageUnavailable(_)) => return Err(e),
            Err(e) => Some(Refusal::Decision(e)),
        };
        Ok(Explanation {
            checks: checks.finish(),
            refusal,
        })
    }

    /// The decision itself, reporting each check to `checks`.
    pub(crate) async fn decide(
        &self,
        query: &AuthorizeQuery,
        checks: &mut impl CheckSink,
    ) -> Result<Authorization> {
        let found = self
            .store
            .authorizing(&query.owner_id, &query.connector, &query.project_id)
            .instrument(tracing::debug_span!(
                "store.authorizing",
                owner_id = %query.owner_id,
                project_id = %query.project_id,
                connector = %query.connector,
            ))
            .await?;
        // An unknown team and a wrong issuer answer alike: neither tells whether the team exists.
        if found
            .team
            .as_ref()
            .is_none_or(|t| t.issuer.as_str() != query.issuer)
        {
            checks.fail(
                "team",
                || {
                    format!(
                        "tokens of team {} must come from its issuer",
                        query.owner_id
                    )
                },
                || "deploy with the team's OIDC issuer".into(),
            );
            return Err(RegistryError::IssuerNotTrusted {
                owner_id: query.owner_id.to_string(),
            });
        }
        checks.pass("team", || {
            format!("{}: tokens from {}", query.owner_id, query.issuer)
        });
        let team_slug = found
            .team
            .as_ref()
            .map(|t| t.slug.clone())
            .expect("the team was found above");
        let environment = self
            .asked_environment(&query.owner_id, &query.project_id, query.environment)
            .await?;
        let (connector, link) = linked(
            found,
            &query.connector,
            &query.project_id,
            environment,
            self.clock.now(),
            checks,
        )?;

        if connector.suspended {
            checks.fail(
                "connector_active",
                || format!("{} is suspended: it issues nothing", connector.uid),
                || format!("connect resume {}", connector.uid),
            );
            return Err(RegistryError::ConnectorSuspended {
                connector: connector.uid.to_string(),
            });
        }
        checks.pass("connector_active", || "not suspended".into());
        let wanted = match &query.installation {
            InstallationAsk::Default => connector.default_installation_id.clone(),
            InstallationAsk::Every => None,
            InstallationAsk::One(id) => Some(id.clone()),
        };
        let installation = match wanted {
            Some(id) => match self.installation_for(&connector, &id).await {
                Ok(found) => {
                    checks.pass("installation", || format!("installation {id}"));
                    Some(found)
                }
                Err(e) => {
                    checks.fail(
                        "installation",
                        || format!("{} has no installation {id}", connector.uid),
                        || format!("connect installations list {}", connector.uid),
                    );
                    return Err(e);
                }
            },
            None => {
                checks.pass("installation", || match query.installation {
                    InstallationAsk::Every => "every installation (`*`)".into(),
                    _ => "none asked, and the connector has no default".into(),
                });
                None
            }
        };
        let secrets = open_all(&self.cipher, &connector)?;
        Ok(Authorization {
            connector,
            link,
            team_slug,
            environment: environment.resolved,
            secrets,
            installation,
        })
    }
}

/// The link's ceilings for what `asked` names, as the broker applies them before the type's
/// rules (the same [`connect_types::Ceilings::refusal`]): the reason of the broker's refusal, if
/// any.
fn ceilings(
    authorization: &Authorization,
    asked: &ExplainQuery,
    checks: &mut Recorded,
) -> Option<connect_types::Reason> {
    let limits = &authorization.link.limits.ceilings;
    let installation = match (&asked.installation, &authorization.installation) {
        (InstallationAsk::Every, _) => crate::domain::types::EVERY_INSTALLATION,
        (_, Some((installation, _))) => installation.id.as_str(),
        (_, None) => "",
    };
    let refusal = limits.refusal(&connect_types::CeilingAsk {
        subject: Some(asked.subject),
        installation: Some(installation),
        scopes: &asked.scopes,
        resources: &asked.resources,
    });
    let Some(refusal) = refusal else {
        checks.pass("ceilings", || {
            if limits.is_empty() {
                "the link sets no ceilings".into()
            } else {
                "within the link's ceilings".into()
            }
        });
        return None;
    };
    let link = &authorization.link;
    checks.fail(
        "ceilings",
        || refusal.to_string(),
        || {
            format!(
                "ask within the link's {}, or attach again with a wider one (connect attach {} --project {} …)",
                refusal.field(),
                link.connector_uid,
                link.project_name
            )
        },
    );
    Some(refusal.reason())
}

/// The rules of the connector type's row for what `asked` names, as the broker applies them
/// before its issuer runs (the same [`connect_types::Capabilities::refusal`]): the reason of the
/// broker's refusal, if any.
fn type_rules(
    authorization: &Authorization,
    asked: &ExplainQuery,
    checks: &mut Recorded,
) -> Option<connect_types::Reason> {
    use connect_types::{Reason, RowAsk, RowRefusal, SubjectKind};
    let kind = authorization.connector.uid.kind();
    let kind = kind.as_str();
    let Some(row) = connect_types::capabilities(kind) else {
        checks.fail(
            "type_rules",
            || format!("connectors of type '{kind}' cannot issue tokens"),
            String::new,
        );
        return Some(Reason::NoValidToken);
    };
    let refusal = row.refusal(RowAsk {
        every_installation: asked.installation == InstallationAsk::Every,
        has_installation: authorization.installation.is_some(),
        resources: !asked.resources.is_empty(),
        subject: asked.subject,
    });
    let Some(refusal) = refusal else {
        checks.pass("type_rules", || {
            format!("{kind} connectors issue for {} subjects", asked.subject)
        });
        return None;
    };
    let uid = &authorization.connector.uid;
    let (detail, fix, reason) = match refusal {
        RowRefusal::EveryInstallation => (
            format!("{kind} connectors issue for one installation at a time, not `*`"),
            "ask for one installation".to_owned(),
            Reason::InvalidArgument,
        ),
        RowRefusal::InstallationRequired => (
            format!(
                "{uid} issues tokens for an installation; none was asked and it has no default"
            ),
            "ask with --installation-id, or add one with connect installations add … --default"
                .to_owned(),
            Reason::ConnectorInstallationRequired,
        ),
        RowRefusal::Resources => (
            format!("{kind} connectors cannot narrow tokens to resources"),
            "ask without resources".to_owned(),
            Reason::InvalidArgument,
        ),
        RowRefusal::Subject(subject) => (
            format!("{kind} connectors do not issue for {subject} subjects"),
            "ask for a subject the type issues for (connect types)".to_owned(),
            if subject == SubjectKind::User {
                Reason::UserAuthorizationRequired
            } else {
                Reason::InvalidArgument
            },
        ),
    };
    checks.fail("type_rules", || detail, || fix);
    Some(reason)
}
