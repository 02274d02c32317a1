//! The commands, one module per group. Each command makes its calls through the [`Context`] and
//! prints with `ctx.emit` / `ctx.emit_list`, so text and JSON output come from one place; what
//! several groups share (paged lists, `KEY=VALUE` flags, secrets read from files) lives here.

pub(crate) mod audit;
pub(crate) mod connectors;
pub(crate) mod installations;
pub(crate) mod links;
pub(crate) mod projects;
pub(crate) mod tokens;

use std::{
    collections::{BTreeSet, HashMap},
    io::Read,
};

use connect_proto::registry::v1 as pb;
use serde_json::{Value, json};

use crate::{
    Context,
    error::{self, Caller, Failure},
    output,
};

const ALL_ENVIRONMENTS: [&str; 3] = ["production", "preview", "development"];

const PAGE: i32 = 500;

/// `KEY=VALUE` pairs. A malformed one is a usage error; the message repeats a `--config` value
/// but never a `--secret` one.
fn pairs(values: Vec<String>, flag: &str) -> Result<Vec<(String, String)>, Failure> {
    let shown = |v: &str| {
        if flag == "--secret" {
            String::new()
        } else {
            format!(" (got '{}')", connect_types::truncate(v, 64))
        }
    };
    values
        .into_iter()
        .map(|v| match v.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            Some(_) => Err(Failure::usage(format!(
                "{flag} expects KEY=VALUE: the KEY before '=' is empty{}",
                shown(&v)
            ))),
            None => Err(Failure::usage(format!(
                "{flag} expects KEY=VALUE: there is no '='{}",
                shown(&v)
            ))),
        })
        .collect()
}

/// A secret's value: itself, the contents of `@FILE`, or stdin for `@-` (once); one trailing
/// newline is dropped from what is read.
fn secret_value(key: &str, value: String, stdin_taken: &mut bool) -> Result<String, Failure> {
    let Some(source) = value.strip_prefix('@') else {
        return Ok(value);
    };
    let text = if source == "-" {
        if std::mem::replace(stdin_taken, true) {
            return Err(Failure::usage(format!(
                "--secret {key}=@-: only one secret can be read from stdin"
            )));
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::usage(format!("--secret {key}=@-: {e}")))?;
        text
    } else {
        std::fs::read_to_string(source).map_err(|e| {
            Failure::usage(format!(
                "--secret {key}=@{source}: cannot read the file: {e}"
            ))
        })?
    };
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(text.to_owned())
}

/// `--config` and `--secret` values as the request maps, secrets read from files or stdin.
type Maps = (HashMap<String, String>, HashMap<String, String>);

fn config_and_secrets(config: Vec<String>, secrets: Vec<String>) -> Result<Maps, Failure> {
    let config: HashMap<String, String> = pairs(config, "--config")?.into_iter().collect();
    let mut stdin_taken = false;
    let mut sealed = HashMap::new();
    for (key, value) in pairs(secrets, "--secret")? {
        let value = secret_value(&key, value, &mut stdin_taken)?;
        sealed.insert(key, value);
    }
    Ok((config, sealed))
}

async fn all_connectors(ctx: &Context) -> Result<Vec<pb::Connector>, Failure> {
    collect(usize::MAX, |page_size, page_token| async move {
        let page = ctx
            .registry()?
            .list_connectors(pb::ListConnectorsRequest {
                page_size,
                page_token,
            })
            .await
            .map_err(ctx.failed())?
            .into_inner();
        Ok((page.connectors, page.next_page_token))
    })
    .await
}

async fn all_links(
    ctx: &Context,
    connector: &str,
    project: &str,
) -> Result<Vec<pb::ProjectLink>, Failure> {
    links_unused_for(ctx, connector, project, None).await
}

/// The links of `connector` and `project` (empty: any), only those unused for `unused_for` when
/// given.
async fn links_unused_for(
    ctx: &Context,
    connector: &str,
    project: &str,
    unused_for: Option<std::time::Duration>,
) -> Result<Vec<pb::ProjectLink>, Failure> {
    let unused_for = unused_for.map(|d| prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    });
    collect(usize::MAX, |page_size, page_token| async move {
        let page = ctx
            .registry()?
            .list_project_links(pb::ListProjectLinksRequest {
                connector: connector.to_owned(),
                project: project.to_owned(),
                page_size,
                page_token,
                unused_for,
            })
            .await
            .map_err(ctx.failed())?
            .into_inner();
        Ok((page.links, page.next_page_token))
    })
    .await
}

/// The items of a paged list, at most `limit`, asking `page(page_size, page_token)` for each
/// page until the list ends.
async fn collect<T, F, Fut>(limit: usize, mut page: F) -> Result<Vec<T>, Failure>
where
    F: FnMut(i32, String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), Failure>>,
{
    let mut all = Vec::new();
    let mut page_token = String::new();
    while all.len() < limit {
        let size = i32::try_from(limit - all.len()).unwrap_or(PAGE).min(PAGE);
        let (items, next) = page(size, page_token).await?;
        all.extend(items);
        if next.is_empty() {
            break;
        }
        page_token = next;
    }
    all.truncate(limit);
    Ok(all)
}
