//! The change feed's vocabulary. Every committed change that can alter an `Authorize` answer
//! carries a [`ChangeScope`] (written with it, in its transaction) and gets a revision; brokers
//! follow the feed to drop exactly the cached answers a change may have made wrong.

use super::types::{ConnectorId, ConnectorUid, ProjectId, TeamId};

/// Which cached answers a change may have made wrong: a team's, narrowed to one connector (named
/// by id and uid, since callers name it either way) and one project when the change is that
/// narrow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeScope {
    pub team_id: TeamId,
    pub connector: Option<(ConnectorId, ConnectorUid)>,
    pub project_id: Option<ProjectId>,
    /// For a revocation: the installation and subject whose credentials it covers (`None`: all).
    pub installation_id: Option<String>,
    pub subject: Option<String>,
}

impl ChangeScope {
    pub fn team(team_id: &TeamId) -> Self {
        Self {
            team_id: team_id.clone(),
            connector: None,
            project_id: None,
            installation_id: None,
            subject: None,
        }
    }

    pub fn connector(team_id: &TeamId, id: &ConnectorId, uid: &ConnectorUid) -> Self {
        Self {
            connector: Some((id.clone(), uid.clone())),
            ..Self::team(team_id)
        }
    }

    pub fn link(
        team_id: &TeamId,
        id: &ConnectorId,
        uid: &ConnectorUid,
        project: &ProjectId,
    ) -> Self {
        Self {
            project_id: Some(project.clone()),
            ..Self::connector(team_id, id, uid)
        }
    }
}

/// A committed change, as the feed sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub revision: i64,
    pub action: String,
    pub scope: ChangeScope,
}

/// What a watcher receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    /// Drop everything cached and continue from this revision.
    Resync {
        revision: i64,
    },
    Change(Change),
    /// Nothing new up to this revision; the feed is alive.
    Heartbeat {
        revision: i64,
    },
}
