//! Projects: `CreateProjectRequest` in, `Project` out.

use connect_proto::registry::v1 as pb;

use super::{Violations, timestamp};
use crate::domain::{
    RegistryError,
    model::Project,
    service::NewProject,
    types::{ProjectId, ProjectName},
};

impl TryFrom<pb::CreateProjectRequest> for NewProject {
    type Error = RegistryError;

    fn try_from(req: pb::CreateProjectRequest) -> Result<Self, Self::Error> {
        let mut v = Violations::default();
        let id = v.check("id", ProjectId::parse(&req.id));
        let name = v.check("name", ProjectName::parse(&req.name));
        let value = id.zip(name).map(|(id, name)| NewProject { id, name });
        v.finish(value)
    }
}

impl From<Project> for pb::Project {
    fn from(p: Project) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.to_string(),
            owner_id: p.team_id.to_string(),
            create_time: Some(timestamp(p.created_at)),
        }
    }
}
