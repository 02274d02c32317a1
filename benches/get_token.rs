//! `cargo bench --bench get_token`: `GetToken` against an empty unary call (`grpc.health.v1`
//! `Health/Check`) on the same broker server, in one run, sequentially and with concurrent
//! callers. The whole system runs on loopback as in production: dev OIDC issuer over HTTP, link
//! registry on SQLite over gRPC, broker verifying an RS256 token and issuing an `api-key` token,
//! started through `connect_dev::LocalStack` like every other local system.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use connect_dev::LocalStack;
use connect_proto::{
    broker::v1::{GetTokenRequest, token_broker_client::TokenBrokerClient},
    registry::v1::{
        AttachProjectRequest, CreateConnectorRequest, CreateProjectRequest,
        link_registry_client::LinkRegistryClient,
    },
};
use connect_runtime::BearerAuth;
use dev_issuer::{Alg, Deployment, DevIssuer};
use futures::{StreamExt, stream};
use link_registry::{
    ServeConfig,
    domain::{
        model::Role,
        service::NewTeam,
        types::{IssuerUrl, TeamId, TeamSlug},
    },
};
use secrecy::ExposeSecret;
use tonic::{Request, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const AUDIENCE: &str = "https://vercel.com/bench";
const CALLS: usize = 5_000;

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let issuer = DevIssuer::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let issuers = vec![issuer.issuer_url()];
    let stack = LocalStack::start(
        ServeConfig::local(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        )),
        |registry_url, broker_key| {
            token_broker::BrokerConfig::local(registry_url, broker_key, issuers, AUDIENCE.into())
        },
    )
    .await?;
    let registry = stack.registry();
    registry
        .create_team(NewTeam {
            id: TeamId::parse("team_bench").map_err(anyhow::Error::msg)?,
            slug: TeamSlug::parse("bench").map_err(anyhow::Error::msg)?,
            issuer: IssuerUrl::parse(issuer.issuer()).map_err(anyhow::Error::msg)?,
        })
        .await?;
    let team = Some(TeamId::parse("team_bench").map_err(anyhow::Error::msg)?);
    let (_, admin_key) = registry.create_api_key(team, Role::Admin).await?;
    let registry_channel = Channel::from_shared(format!("http://{}", stack.registry_addr()))?
        .connect()
        .await?;
    let mut admin = LinkRegistryClient::with_interceptor(
        registry_channel,
        BearerAuth::new(admin_key.expose_secret())?,
    );
    admin
        .create_project(CreateProjectRequest {
            id: "prj_bench".into(),
            name: "bench".into(),
        })
        .await?;
    admin
        .create_connector(CreateConnectorRequest {
            uid: "api-key/bench".into(),
            secrets: [("api_key".to_owned(), "sk_bench".to_owned())].into(),
            ..Default::default()
        })
        .await?;
    admin
        .attach_project(AttachProjectRequest {
            connector: "api-key/bench".into(),
            project: "prj_bench".into(),
            environments: vec!["production".into()],
        })
        .await?;

    let broker_addr = stack.broker_addr();
    let channel = Channel::from_shared(format!("http://{broker_addr}"))?
        .connect()
        .await?;
    let health = HealthClient::new(channel.clone());
    let broker = TokenBrokerClient::new(channel);

    let token = issuer.mint(
        &Deployment {
            owner: "bench".into(),
            owner_id: "team_bench".into(),
            project: "bench".into(),
            project_id: "prj_bench".into(),
            environment: "production".into(),
            audience: AUDIENCE.into(),
        },
        Duration::from_secs(3600),
        Alg::RS256,
    );
    let authorization: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;

    let empty_call = || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("health check");
        }
    };
    let get_token = || {
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
    };

    // Warm up connections, caches and allocators.
    measure(16, empty_call).await;
    measure(16, get_token).await;

    println!("{CALLS} calls each, on one broker server (loopback, SQLite registry)\n");
    println!(
        "{:<26} {:>12} {:>10} {:>10}",
        "call (concurrency)", "calls/s", "p50", "p99"
    );
    for concurrency in [1, 16, 64] {
        let empty = measure(concurrency, empty_call).await;
        let full = measure(concurrency, get_token).await;
        for (name, s) in [("Health/Check (empty)", &empty), ("GetToken", &full)] {
            println!(
                "{:<26} {:>12.0} {:>10.1?} {:>10.1?}",
                format!("{name} ({concurrency})"),
                s.per_second,
                s.p50,
                s.p99
            );
        }
        println!(
            "  GetToken costs {:.1}× an empty call at p50, {:.1}× in throughput\n",
            full.p50.as_secs_f64() / empty.p50.as_secs_f64(),
            empty.per_second / full.per_second
        );
    }
    Ok(())
}
