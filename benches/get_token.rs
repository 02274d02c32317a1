//! `cargo bench --bench get_token [-- --json FILE]`: `GetToken` against an empty unary call
//! (`grpc.health.v1` `Health/Check`, carrying the same bearer header) on the same broker server,
//! in one run, at 1, 16, 64 and 256 concurrent callers. The whole system runs on loopback as in
//! production, started through `connect_dev::LocalStack`: dev OIDC issuer over HTTP, link registry
//! on SQLite over gRPC, broker verifying the deployment token and issuing an `api-key` token.
//!
//! Scenarios: `warm` (one token called again and again: the verified-token and authorization
//! caches answer) and `cold` (a second system with both caches off: every call verifies the
//! signature and asks the registry), each with an RS256 and an ES256 token.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use connect_dev::LocalStack;
use connect_proto::broker::v1::{GetTokenRequest, token_broker_client::TokenBrokerClient};
use dev_issuer::{Alg, Deployment, DevIssuer};
use futures::{StreamExt, stream};
use link_registry::{
    ServeConfig,
    domain::{
        Registry,
        model::Role,
        service::{NewConnector, NewProject, NewTeam},
        types::{
            ConfigMap, ConnectorRef, ConnectorUid, DisplayName, EnvironmentSet, IssuerUrl,
            ProjectId, ProjectName, ProjectRef, SecretInput, TeamId, TeamSlug,
        },
    },
};
use secrecy::ExposeSecret;
use tonic::{Request, metadata::MetadataValue, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const AUDIENCE: &str = "https://vercel.com/bench";
const CALLS: usize = 5_000;
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];

struct Stats {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure<F, Fut>(concurrency: usize, call: F) -> Stats
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut latencies: Vec<Duration> = stream::iter(0..CALLS)
        .map(|_| {
            let call = call();
            async move {
                let at = Instant::now();
                call.await;
                at.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let total = started.elapsed();
    latencies.sort();
    Stats {
        per_second: CALLS as f64 / total.as_secs_f64(),
        p50: latencies[CALLS / 2],
        p99: latencies[CALLS * 99 / 100],
    }
}

fn parsed<T>(value: Result<T, String>) -> anyhow::Result<T> {
    value.map_err(anyhow::Error::msg)
}

/// Team `team_bench` trusting `issuer`, project `prj_bench` linked to `api-key/bench` in
/// production.
async fn seed(registry: &Registry, issuer: &DevIssuer) -> anyhow::Result<()> {
    let team = parsed(TeamId::parse("team_bench"))?;
    registry
        .create_team(NewTeam {
            id: team.clone(),
            slug: parsed(TeamSlug::parse("bench"))?,
            issuer: parsed(IssuerUrl::parse(issuer.issuer()))?,
        })
        .await?;
    let (_, key) = registry.create_api_key(Some(team), Role::Admin).await?;
    let admin = registry.authenticate(key.expose_secret()).await?;
    registry
        .create_project(
            &admin,
            NewProject {
                id: parsed(ProjectId::parse("prj_bench"))?,
                name: parsed(ProjectName::parse("bench"))?,
            },
        )
        .await?;
    let secrets = SecretInput::parse([("api_key".to_owned(), "sk_bench".to_owned())])
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    registry
        .create_connector(
            &admin,
            NewConnector {
                uid: parsed(ConnectorUid::parse("api-key/bench"))?,
                name: parsed(DisplayName::parse("bench"))?,
                config: ConfigMap::from_stored(BTreeMap::new()),
                secrets,
            },
        )
        .await?;
    registry
        .attach_project(
            &admin,
            &parsed(ConnectorRef::parse("api-key/bench"))?,
            &parsed(ProjectRef::parse("prj_bench"))?,
            parsed(EnvironmentSet::parse(&["production"]))?,
        )
        .await?;
    Ok(())
}

/// A whole system trusting `issuer`, with or without the broker's caches, and a channel to its
/// broker.
async fn system(
    dir: &tempfile::TempDir,
    name: &str,
    issuer: &DevIssuer,
    caches: bool,
) -> anyhow::Result<(LocalStack, Channel)> {
    let issuers = vec![issuer.issuer_url()];
    let stack = LocalStack::start(
        ServeConfig::local(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join(format!("{name}.db")).display()
        )),
        |registry_url, broker_key| {
            let mut config = token_broker::BrokerConfig::local(
                registry_url,
                broker_key,
                issuers,
                AUDIENCE.into(),
            );
            if !caches {
                config.authz_cache_size = 0;
                config.verified_token_cache_size = 0;
            }
            config.max_concurrent_requests = 4096;
            config
        },
    )
    .await?;
    seed(stack.registry(), issuer).await?;
    let channel = Channel::from_shared(format!("http://{}", stack.broker_addr()))?
        .connect()
        .await?;
    Ok((stack, channel))
}

#[derive(serde::Serialize)]
struct Row {
    scenario: String,
    concurrency: usize,
    calls_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    /// For `GetToken` rows: throughput over the baseline's at the same concurrency.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).cloned());
    let dir = tempfile::tempdir()?;
    let issuer = DevIssuer::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let (warm_stack, warm) = system(&dir, "warm", &issuer, true).await?;
    let (cold_stack, cold) = system(&dir, "cold", &issuer, false).await?;

    let deployment = Deployment {
        owner: "bench".into(),
        owner_id: "team_bench".into(),
        project: "bench".into(),
        project_id: "prj_bench".into(),
        environment: "production".into(),
        audience: AUDIENCE.into(),
    };
    let bearer = |alg| -> anyhow::Result<MetadataValue<_>> {
        let token = issuer.mint(&deployment, Duration::from_secs(3600), alg);
        Ok(format!("Bearer {token}").parse()?)
    };
    let (rs256, es256) = (bearer(Alg::RS256)?, bearer(Alg::ES256)?);

    let empty_call = |channel: Channel, authorization: MetadataValue<_>| {
        let health = HealthClient::new(channel);
        move || {
            let mut health = health.clone();
            let authorization = authorization.clone();
            async move {
                let mut request = Request::new(HealthCheckRequest::default());
                request
                    .metadata_mut()
                    .insert("authorization", authorization);
                health.check(request).await.expect("health check");
            }
        }
    };
    let get_token = |channel: Channel, authorization: MetadataValue<_>| {
        let broker = TokenBrokerClient::new(channel);
        move || {
            let mut broker = broker.clone();
            let authorization = authorization.clone();
            async move {
                let mut request = Request::new(GetTokenRequest {
                    connector: "api-key/bench".into(),
                    ..Default::default()
                });
                request
                    .metadata_mut()
                    .insert("authorization", authorization);
                let answer = broker.get_token(request).await.expect("GetToken");
                assert_eq!(answer.get_ref().token, "sk_bench");
            }
        }
    };
    type Call = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;
    fn boxed<F, Fut>(f: F) -> Call
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Arc::new(move || Box::pin(f()))
    }
    let scenarios: Vec<(&str, Call)> = vec![
        ("baseline", boxed(empty_call(warm.clone(), rs256.clone()))),
        ("warm RS256", boxed(get_token(warm.clone(), rs256.clone()))),
        ("warm ES256", boxed(get_token(warm.clone(), es256.clone()))),
        ("cold RS256", boxed(get_token(cold.clone(), rs256.clone()))),
        ("cold ES256", boxed(get_token(cold.clone(), es256.clone()))),
    ];

    // Warm up connections, caches and allocators.
    for (_, call) in &scenarios {
        measure(16, || call()).await;
    }

    println!(
        "{CALLS} calls each, loopback, SQLite registry; baseline = Health/Check with the same bearer header\n"
    );
    println!(
        "{:<12} {:>6} {:>10} {:>10} {:>10} {:>7}",
        "scenario", "conc.", "calls/s", "p50", "p99", "ratio"
    );
    let mut rows = Vec::new();
    for concurrency in CONCURRENCY {
        let mut baseline = None;
        for (name, call) in &scenarios {
            let stats = measure(concurrency, || call()).await;
            let ratio = baseline.map(|b: f64| stats.per_second / b);
            if *name == "baseline" {
                baseline = Some(stats.per_second);
            }
            println!(
                "{name:<12} {concurrency:>6} {:>10.0} {:>10.1?} {:>10.1?} {:>7}",
                stats.per_second,
                stats.p50,
                stats.p99,
                ratio.map_or(String::new(), |r| format!("{r:.2}")),
            );
            rows.push(Row {
                scenario: (*name).to_owned(),
                concurrency,
                calls_per_s: stats.per_second,
                p50_us: stats.p50.as_secs_f64() * 1e6,
                p99_us: stats.p99.as_secs_f64() * 1e6,
                ratio,
            });
        }
        println!();
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
        println!("rows written to {path}");
    }
    warm_stack.stop().await?;
    cold_stack.stop().await?;
    issuer.stop().await;
    Ok(())
}
