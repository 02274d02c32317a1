//! `cargo bench --bench get_token [-- --json FILE]`: `GetToken` against an empty unary call
//! (`grpc.health.v1` `Health/Check`, carrying the same bearer header) on the same broker server,
//! in one run, at 1, 16, 64 and 256 concurrent callers. The whole system runs on loopback as in
//! production, started through `connect_dev::LocalStack`: dev OIDC issuer over HTTP, link registry
//! on SQLite over gRPC, broker verifying the deployment token and issuing an `api-key` token.
//!
//! Scenarios: `warm` (one token called again and again: the verified-token and authorization
//! caches answer) and `cold` (a second system with both caches off: every call verifies the
//! signature and asks the registry), each with an RS256 and an ES256 token.
//!
//! `-- --telemetry off|logs|otlp` sets what the process traces through (one mode a run, since
//! the subscriber is the process's): `off` (the default) installs none; `logs` installs the
//! servers' own subscriber as they run without `--otlp-endpoint` (log lines formatted, then
//! written to a sink rather than a terminal); `otlp` adds span export to an OTLP collector on
//! loopback, as `--otlp-endpoint` does. The collector runs as a child process (this program with
//! `--otlp-collector-only`), so its work is not counted in this process's CPU time per call.
//!
//! Further rows, each printed and written as rows too (sections run in this order;
//! `-- --only rss|throughput|detach` runs one of them):
//! - `rss 100k callers`: growth of the process's resident memory while one broker fills its
//!   caches with 100 000 distinct callers (100 000 projects linked to one connector, each calling
//!   with its own token): an upper bound of the broker's own growth, measured first so that no
//!   earlier section's freed memory hides it;
//! - `jwks fetches`: how often 256 concurrent cold calls signed with a key the broker has not seen
//!   make it fetch the issuer's JWKS;
//! - `detach→deny`: the time from `DetachProject` to the first denial at each of two caching
//!   brokers (p50/p99 over 100 detaches): two brokers on one SQLite registry, and, when
//!   `BENCH_DATABASE_URL` names a PostgreSQL server (as `TEST_DATABASE_URL` does), two registry
//!   replicas on one PostgreSQL database with one broker each;
//! - `mint ES256` (`--only mint`): tokens Connect signs as an OIDC issuer, one after another on
//!   one thread (one core), with a key as the registry makes them;
//! - `proxy` (`--only proxy`): the same small request to a loopback Rust upstream (axum), straight
//!   and through the broker's credential-injecting proxy, at 1 and 64 callers (HTTP/1.1, pooled
//!   connections; the added p50 at 1 caller and the throughput ratio at 64 are printed), beside a
//!   bare forwarder built the same way (axum in, `reqwest` out, nothing else: what any such
//!   proxy costs on the machine), one with `hyper-util`'s client in place of `reqwest`, and a
//!   TCP relay copying each caller's bytes to a connection of its own (no HTTP at all: the
//!   least any proxy that takes the caller's connection costs on the machine), then a 100 MB body streamed down through the proxy while the process's peak resident memory is
//!   watched (`VmHWM`, reset first through `/proc/self/clear_refs`).

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
        model::{LinkLimits, Role},
        service::{NewConnector, NewProject, NewTeam},
        store::LinkTerms,
        types::{
            ConfigMap, ConnectorRef, ConnectorUid, DisplayName, EnvironmentSet, IssuerUrl,
            ProjectId, ProjectName, ProjectRef, SecretInput, TeamId, TeamSlug,
        },
    },
};
use sea_orm::{ConnectionTrait, Database};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, metadata::MetadataValue, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const AUDIENCE: &str = "https://vercel.com/bench";
const CALLS: usize = 5_000;
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];

struct Stats {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time of the whole process (client, servers, issuer) per call.
    cpu_per_call: Duration,
}

/// CPU time the process's threads have run so far (`/proc/self/task/*/schedstat`, in ns): a
/// steadier measure of cost than throughput on a shared machine.
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    Duration::from_nanos(nanos)
}

async fn measure<F, Fut>(concurrency: usize, call: F) -> Stats
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let cpu_before = process_cpu();
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
    let cpu = process_cpu().saturating_sub(cpu_before);
    latencies.sort();
    Stats {
        per_second: CALLS as f64 / total.as_secs_f64(),
        p50: latencies[CALLS / 2],
        p99: latencies[CALLS * 99 / 100],
        cpu_per_call: cpu / CALLS as u32,
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
    // A subject ceiling, so that every warm call checks the link's ceilings.
    registry
        .attach_project_with(
            &admin,
            &parsed(ConnectorRef::parse("api-key/bench"))?,
            &parsed(ProjectRef::parse("prj_bench"))?,
            LinkTerms {
                limits: LinkLimits {
                    ceilings: connect_types::Ceilings {
                        subjects: vec![connect_types::SubjectKind::App],
                        ..Default::default()
                    },
                    max_issuances_per_hour: 0,
                },
                ..LinkTerms::lasting(parsed(EnvironmentSet::parse(&["production"]))?)
            },
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
    /// CPU time of the whole process per call, where measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_us: Option<f64>,
    /// For `GetToken` rows: throughput over the baseline's at the same concurrency.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
}

/// The collector child process, killed when dropped.
struct CollectorProcess(std::process::Child);

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this program as an OTLP collector and answers with it and its endpoint.
fn collector_process() -> anyhow::Result<(CollectorProcess, String)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--otlp-collector-only")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no collector stdout"))?;
    let child = CollectorProcess(child);
    let mut endpoint = String::new();
    std::io::BufReader::new(stdout).read_line(&mut endpoint)?;
    Ok((child, endpoint.trim().to_owned()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--otlp-collector-only") {
        let collector = connect_dev::OtlpCollector::counting().await?;
        println!("{}", collector.endpoint());
        std::future::pending::<()>().await;
    }
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).cloned());
    let dir = tempfile::tempdir()?;
    let issuer = DevIssuer::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let wanted = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let telemetry = args
        .iter()
        .position(|a| a == "--telemetry")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "off".to_owned());
    // Kept until the end: the collector and the exporter that sends to it.
    let _traced = {
        use connect_runtime::{LogFormat, telemetry};
        let (collector, provider) = match telemetry.as_str() {
            "off" | "logs" => (None, None),
            "otlp" => {
                let (collector, endpoint) = collector_process()?;
                let provider = telemetry::otlp_provider(&endpoint, "connect-bench")?;
                (Some(collector), Some(provider))
            }
            other => anyhow::bail!("--telemetry {other}: expected off, logs or otlp"),
        };
        if telemetry != "off" {
            tracing::subscriber::set_global_default(telemetry::subscriber(
                LogFormat::Text,
                provider.as_ref(),
                std::io::sink,
            ))?;
        }
        (collector, provider)
    };
    println!("telemetry: {telemetry}");
    let mut rows = Vec::new();
    if wanted("rss") {
        rows.push(rss_with_many_callers(&dir, &issuer, 100_000).await?);
    }
    if wanted("throughput") {
        rows.extend(throughput(&dir, &issuer).await?);
    }

    if wanted("detach") {
        rows.extend(detach_to_deny_sqlite(&dir, &issuer).await?);
        match std::env::var("BENCH_DATABASE_URL") {
            Ok(url) => rows.extend(detach_to_deny_postgres(&dir, &issuer, &url).await?),
            Err(_) => println!("BENCH_DATABASE_URL unset: no PostgreSQL replica rows"),
        }
    }
    if wanted("mint") {
        rows.push(mint(20_000)?);
    }
    if wanted("proxy") {
        rows.extend(proxy_rows(&dir, &issuer).await?);
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
        println!("rows written to {path}");
    }
    issuer.stop().await;
    Ok(())
}

/// `count` tokens signed one after another on this thread, each timed.
fn mint(count: usize) -> anyhow::Result<Row> {
    let (pkcs8, public_jwk, kid) = link_registry::crypto::new_signing_key();
    let ring = token_broker::issuer::KeyRing::new(Duration::from_secs(600));
    ring.replace(vec![token_broker::issuer::KeyMaterial {
        kid,
        alg: "ES256".into(),
        pkcs8: pkcs8.into(),
        public_jwk,
        created_at: chrono::Utc::now(),
    }]);
    let now = chrono::Utc::now().timestamp();
    let mut times = Vec::with_capacity(count);
    let cpu = process_cpu();
    let started = Instant::now();
    for i in 0..count {
        let claims = serde_json::json!({
            "iss": "https://connect.example.com",
            "sub": "owner:acme:project:web:environment:production",
            "aud": "sts.amazonaws.com",
            "owner_id": "team_acme", "project_id": "prj_web", "environment": "production",
            "connector_id": "conn_0123456789abcdefghijklmn",
            "iat": now, "exp": now + 300, "jti": i,
        });
        let one = Instant::now();
        std::hint::black_box(ring.sign(&claims)?);
        times.push(one.elapsed());
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu);
    times.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let row = Row {
        scenario: "mint ES256".into(),
        concurrency: 1,
        calls_per_s: count as f64 / elapsed.as_secs_f64(),
        p50_us: micros(times[count / 2]),
        p99_us: micros(times[count * 99 / 100]),
        cpu_us: Some(micros(cpu) / count as f64),
        ratio: None,
    };
    println!(
        "\nmint ES256: {count} tokens on one thread: {:.0}/s, p50 {:.1}µs, p99 {:.1}µs, {:.1}µs of CPU each",
        row.calls_per_s,
        row.p50_us,
        row.p99_us,
        row.cpu_us.unwrap_or_default()
    );
    Ok(row)
}

/// The throughput table (baseline, warm and cold at every concurrency), then the JWKS row.
async fn throughput(dir: &tempfile::TempDir, issuer: &DevIssuer) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let (warm_stack, warm) = system(dir, "warm", issuer, true).await?;
    let cold_started = Instant::now();
    let (cold_stack, cold) = system(dir, "cold", issuer, false).await?;

    let deployment = deployment_of("prj_bench");
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
        "{:<12} {:>6} {:>10} {:>10} {:>10} {:>7} {:>9}",
        "scenario", "conc.", "calls/s", "p50", "p99", "ratio", "cpu/call"
    );
    for concurrency in CONCURRENCY {
        let mut baseline = None;
        for (name, call) in &scenarios {
            let stats = measure(concurrency, || call()).await;
            let ratio = baseline.map(|b: f64| stats.per_second / b);
            if *name == "baseline" {
                baseline = Some(stats.per_second);
            }
            println!(
                "{name:<12} {concurrency:>6} {:>10.0} {:>10.1?} {:>10.1?} {:>7} {:>9.1?}",
                stats.per_second,
                stats.p50,
                stats.p99,
                ratio.map_or(String::new(), |r| format!("{r:.2}")),
                stats.cpu_per_call,
            );
            rows.push(Row {
                scenario: (*name).to_owned(),
                concurrency,
                calls_per_s: stats.per_second,
                p50_us: stats.p50.as_secs_f64() * 1e6,
                p99_us: stats.p99.as_secs_f64() * 1e6,
                cpu_us: Some(stats.cpu_per_call.as_secs_f64() * 1e6),
                ratio,
            });
        }
        println!();
    }
    rows.push(jwks_fetches_for_new_key(&cold, issuer, &deployment, cold_started).await?);
    warm_stack.stop().await?;
    cold_stack.stop().await?;
    Ok(rows)
}

fn row(scenario: &str, concurrency: usize, per_second: f64, p50_us: f64, p99_us: f64) -> Row {
    Row {
        scenario: scenario.to_owned(),
        concurrency,
        calls_per_s: per_second,
        p50_us,
        p99_us,
        cpu_us: None,
        ratio: None,
    }
}

/// The process's resident set, in bytes.
fn rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))?;
    Ok(kb * 1024)
}

/// A `GetToken` for `api-key/bench` with `token`, answered `Ok(())` or with the error's reason.
async fn call(channel: &Channel, token: &str) -> Result<(), String> {
    let mut request = Request::new(GetTokenRequest {
        connector: "api-key/bench".into(),
        ..Default::default()
    });
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    request.metadata_mut().insert("authorization", value);
    match TokenBrokerClient::new(channel.clone())
        .get_token(request)
        .await
    {
        Ok(_) => Ok(()),
        Err(status) => Err(tonic_types::StatusExt::get_details_error_info(&status)
            .map_or_else(|| status.message().to_owned(), |i| i.reason)),
    }
}

fn deployment_of(project_id: &str) -> Deployment {
    Deployment {
        owner: "bench".into(),
        owner_id: "team_bench".into(),
        project: "bench".into(),
        project_id: project_id.into(),
        environment: "production".into(),
        audience: AUDIENCE.into(),
    }
}

/// One broker, `callers` projects linked to `api-key/bench` (copied from `prj_bench`'s rows in
/// one statement each, so that seeding takes seconds), each calling once with its own ES256
/// token: the broker then holds `callers` verified tokens and `callers` authorizations.
async fn rss_with_many_callers(
    dir: &tempfile::TempDir,
    issuer: &DevIssuer,
    callers: usize,
) -> anyhow::Result<Row> {
    let (stack, channel) = system(
        dir,
        "rss",
        issuer,
        std::env::var_os("RSS_NOCACHE").is_none(),
    )
    .await?;
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("rss.db").display());
    let db = Database::connect(db_url).await?;
    for statement in [
        "INSERT INTO projects (team_id, id, name, created_at) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {N}) \
         SELECT p.team_id, 'prj_c' || n.i, 'c' || n.i, p.created_at \
         FROM n, projects p WHERE p.id = 'prj_bench'",
        "INSERT INTO project_links (team_id, connector_id, project_id, environments, created_at, updated_at) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {N}) \
         SELECT l.team_id, l.connector_id, 'prj_c' || n.i, l.environments, l.created_at, l.updated_at \
         FROM n, project_links l WHERE l.project_id = 'prj_bench'",
    ] {
        db.execute_unprepared(&statement.replace("{N}", &callers.to_string()))
            .await?;
    }
    db.close().await?;
    // Warm-up of connections and allocator before the first reading.
    let token = issuer.mint(
        &deployment_of("prj_bench"),
        Duration::from_secs(3600),
        Alg::ES256,
    );
    for _ in 0..100 {
        call(&channel, &token).await.map_err(anyhow::Error::msg)?;
    }
    let before = rss_bytes()?;
    let started = Instant::now();
    let failures: usize = stream::iter(1..=callers)
        .map(|i| {
            let channel = channel.clone();
            let token = issuer.mint(
                &deployment_of(&format!("prj_c{i}")),
                Duration::from_secs(3600),
                Alg::ES256,
            );
            async move { usize::from(call(&channel, &token).await.is_err()) }
        })
        .buffer_unordered(64)
        .fold(0, |n, failed| async move { n + failed })
        .await;
    let took = started.elapsed();
    anyhow::ensure!(
        failures == 0,
        "{failures} of {callers} callers were refused"
    );
    let grown = rss_bytes()?.saturating_sub(before);
    println!(
        "rss: {callers} distinct callers cached in {took:.1?}: resident memory grew by {:.1} MB\n",
        grown as f64 / 1e6
    );
    stack.stop().await?;
    // `p50_us`/`p99_us` carry megabytes for this row.
    Ok(row(
        &format!("rss MB, {callers} callers"),
        64,
        callers as f64 / took.as_secs_f64(),
        grown as f64 / 1e6,
        grown as f64 / 1e6,
    ))
}

/// 256 concurrent calls with a token signed by a key the broker has not seen, on the cold
/// system (no verified-token cache): how many JWKS fetches they cause.
async fn jwks_fetches_for_new_key(
    cold: &Channel,
    issuer: &DevIssuer,
    deployment: &Deployment,
    cold_started: Instant,
) -> anyhow::Result<Row> {
    // An unknown kid may trigger a fetch once per cooldown (30 s by default) after the last one.
    let cooldown = Duration::from_secs(31);
    if let Some(wait) = cooldown.checked_sub(cold_started.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    issuer.rotate();
    let token = issuer.mint(deployment, Duration::from_secs(3600), Alg::RS256);
    let before = issuer.jwks_fetches();
    let started = Instant::now();
    let answers = futures::future::join_all((0..256).map(|_| call(cold, &token))).await;
    let took = started.elapsed();
    let refused = answers.iter().filter(|a| a.is_err()).count();
    anyhow::ensure!(refused == 0, "{refused} of 256 calls were refused");
    let fetches = issuer.jwks_fetches() - before;
    println!(
        "jwks: 256 concurrent calls with a new signing key: {fetches} JWKS fetch(es), all answered in {took:.1?}\n"
    );
    // `calls_per_s` carries the number of fetches for this row.
    Ok(row(
        "jwks fetches, 256 cold calls",
        256,
        fetches as f64,
        0.0,
        0.0,
    ))
}

/// A broker of its own on `registry_url`, serving on loopback until the returned sender fires.
async fn extra_broker(
    registry_url: String,
    key: SecretString,
    issuer: &DevIssuer,
) -> anyhow::Result<(Channel, tokio::sync::oneshot::Sender<()>)> {
    let config = token_broker::BrokerConfig::local(
        registry_url,
        key,
        vec![issuer.issuer_url()],
        AUDIENCE.into(),
    );
    let app = token_broker::App::build(config).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok((channel, stop))
}

/// `detaches` times: attach `prj_bench` in production, wait until every broker says yes (so each
/// holds a cached yes), detach through `detach_on`, and time each broker's first denial.
async fn detach_to_deny(
    label: &str,
    detach_on: &Registry,
    brokers: &[Channel],
    token: &str,
    detaches: usize,
) -> anyhow::Result<Vec<Row>> {
    let (_, key) = detach_on
        .create_api_key(Some(parsed(TeamId::parse("team_bench"))?), Role::Admin)
        .await?;
    let admin = detach_on.authenticate(key.expose_secret()).await?;
    let connector = parsed(ConnectorRef::parse("api-key/bench"))?;
    let project = parsed(ProjectRef::parse("prj_bench"))?;
    let mut times = vec![Vec::new(); brokers.len()];
    let started = Instant::now();
    for _ in 0..detaches {
        for broker in brokers {
            let deadline = Instant::now() + Duration::from_secs(10);
            while call(broker, token).await.is_err() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "an attach never reached a broker"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let detached_at = Instant::now();
        detach_on
            .detach_project(&admin, &connector, &project)
            .await?;
        let waits = futures::future::join_all(brokers.iter().map(|broker| async move {
            loop {
                match call(broker, token).await {
                    Err(reason) if reason == "CLIENT_NOT_LINKED_TO_PROJECT" => {
                        return Ok(detached_at.elapsed());
                    }
                    _ if detached_at.elapsed() > Duration::from_secs(10) => {
                        return Err(anyhow::anyhow!("a detach never reached a broker"));
                    }
                    _ => tokio::task::yield_now().await,
                }
            }
        }))
        .await;
        for (broker, wait) in waits.into_iter().enumerate() {
            times[broker].push(wait?);
        }
        detach_on
            .attach_project(
                &admin,
                &connector,
                &project,
                parsed(EnvironmentSet::parse(&["production"]))?,
            )
            .await?;
    }
    let per_second = detaches as f64 / started.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for (i, mut broker_times) in times.into_iter().enumerate() {
        broker_times.sort();
        let p50 = broker_times[broker_times.len() / 2];
        let p99 = broker_times[broker_times.len() * 99 / 100];
        let scenario = format!("detach→deny {label} broker {}", i + 1);
        println!("{scenario:<40} p50 {p50:>9.2?}   p99 {p99:>9.2?}   ({detaches} detaches)");
        rows.push(row(
            &scenario,
            1,
            per_second,
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
        ));
    }
    println!();
    Ok(rows)
}

/// Two caching brokers on one SQLite registry.
async fn detach_to_deny_sqlite(
    dir: &tempfile::TempDir,
    issuer: &DevIssuer,
) -> anyhow::Result<Vec<Row>> {
    let (stack, first) = system(dir, "detach", issuer, true).await?;
    let (_, key) = stack.registry().create_api_key(None, Role::Broker).await?;
    let (second, stop_second) = extra_broker(stack.registry_url().to_owned(), key, issuer).await?;
    let token = issuer.mint(
        &deployment_of("prj_bench"),
        Duration::from_secs(3600),
        Alg::ES256,
    );
    let rows = detach_to_deny("sqlite", stack.registry(), &[first, second], &token, 100).await?;
    let _ = stop_second.send(());
    stack.stop().await?;
    Ok(rows)
}

/// Two registry replicas on one new PostgreSQL database (on the server of `admin_url`), one
/// caching broker on each; every detach is made on the first replica.
async fn detach_to_deny_postgres(
    dir: &tempfile::TempDir,
    issuer: &DevIssuer,
    admin_url: &str,
) -> anyhow::Result<Vec<Row>> {
    let name = format!(
        "connect_bench_{}",
        link_registry::crypto::random_token(10).to_lowercase()
    );
    let admin = Database::connect(admin_url).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
    let url = format!("{base}/{name}");
    let key_file = dir.path().join("bench-pg.key");
    link_registry::crypto::SecretCipher::from_key_file(&key_file, true)?;
    let replica = || {
        let mut config = ServeConfig::local(url.clone());
        config.secret_key_file = Some(key_file.clone());
        config
    };
    let issuers = vec![issuer.issuer_url()];
    let first = LocalStack::start(replica(), |registry_url, key| {
        token_broker::BrokerConfig::local(registry_url, key, issuers, AUDIENCE.into())
    })
    .await?;
    seed(first.registry(), issuer).await?;
    let second_registry = link_registry::App::build(replica()).await?;
    let second_url = format!("http://{}", second_registry.local_addr());
    let (_, key) = second_registry
        .registry()
        .create_api_key(None, Role::Broker)
        .await?;
    let (stop_registry, registry_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(second_registry.run_until(async {
        let _ = registry_stopped.await;
    }));
    let (second_broker, stop_broker) = extra_broker(second_url, key, issuer).await?;
    let first_broker = Channel::from_shared(format!("http://{}", first.broker_addr()))?
        .connect()
        .await?;
    let token = issuer.mint(
        &deployment_of("prj_bench"),
        Duration::from_secs(3600),
        Alg::ES256,
    );
    let rows = detach_to_deny(
        "postgres replicas",
        first.registry(),
        &[first_broker, second_broker],
        &token,
        100,
    )
    .await?;
    let _ = stop_broker.send(());
    let _ = stop_registry.send(());
    first.stop().await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(rows)
}

/// A loopback upstream: `GET /ping` answers 64 bytes, `GET /big?bytes=N` N bytes in 64 KiB chunks.
async fn upstream() -> anyhow::Result<String> {
    use axum::{Router, body::Body, extract::Query, routing::get};
    #[derive(serde::Deserialize)]
    struct Size {
        bytes: u64,
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route(
            "/ping",
            get(|| async { "{\"ok\":true,\"pad\":\"0123456789012345678901234567890123456\"}" }),
        )
        .route(
            "/big",
            get(|Query(size): Query<Size>| async move {
                let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
                let n = size.bytes / chunk.len() as u64;
                Body::from_stream(
                    stream::iter(0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                )
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// The least any HTTP/1.1 forwarder built like the proxy (axum in, `reqwest` out, bodies streamed)
/// costs: it forwards every request to `upstream` with nothing else (no authorization, no header
/// rules, no masking). Answers its base URL.
async fn bare_forwarder(upstream: String) -> anyhow::Result<String> {
    use axum::{Router, body::Body, extract::Request, response::Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let http = reqwest::Client::new();
    let app = Router::new().fallback(move |request: Request| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            let (parts, _) = request.into_parts();
            let answer = http
                .request(parts.method, format!("{upstream}{}", parts.uri.path()))
                .send()
                .await
                .expect("the upstream answers");
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            response
                .body(Body::from_stream(answer.bytes_stream()))
                .expect("a response")
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// As [`bare_forwarder`], with `hyper-util`'s client in place of `reqwest`.
async fn bare_hyper_forwarder(upstream: String) -> anyhow::Result<String> {
    use axum::{Router, body::Body, extract::Request};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let app = Router::new().fallback(move |request: Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let (mut parts, body) = request.into_parts();
            parts.uri = format!("{upstream}{}", parts.uri.path())
                .parse()
                .expect("a URI");
            parts.headers.remove(axum::http::header::HOST);
            let answer = client
                .request(axum::http::Request::from_parts(parts, body))
                .await
                .expect("the upstream answers");
            answer.map(Body::new)
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// The least any proxy that takes the caller's connection costs: each connection relayed to one
/// of its own to the upstream, bytes copied both ways (no HTTP parsed, nothing else). Answers
/// its base URL.
async fn tcp_relay(upstream: &str) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let to = upstream
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("the upstream is http://"))?
        .to_owned();
    tokio::spawn(async move {
        while let Ok((mut caller, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let _ = (caller.set_nodelay(true), upstream.set_nodelay(true));
                let _ = tokio::io::copy_bidirectional(&mut caller, &mut upstream).await;
            });
        }
    });
    Ok(url)
}

/// The process's peak resident set since the last reset, in bytes.
fn peak_rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))?;
    Ok(kb * 1024)
}

/// Straight to the upstream and through the proxy: latency and throughput, then a 100 MB
/// stream's memory.
async fn proxy_rows(dir: &tempfile::TempDir, issuer: &DevIssuer) -> anyhow::Result<Vec<Row>> {
    let upstream = upstream().await?;
    let (stack, _) = system(dir, "proxy", issuer, true).await?;
    let registry = stack.registry();
    let (_, key) = registry
        .create_api_key(Some(parsed(TeamId::parse("team_bench"))?), Role::Admin)
        .await?;
    let admin = registry.authenticate(key.expose_secret()).await?;
    registry
        .create_connector(
            &admin,
            NewConnector {
                uid: parsed(ConnectorUid::parse("api-key/proxied"))?,
                name: parsed(DisplayName::parse("proxied"))?,
                config: ConfigMap::from_stored(BTreeMap::from([(
                    "proxy_base_url".to_owned(),
                    upstream.clone(),
                )])),
                secrets: SecretInput::parse([(
                    "api_key".to_owned(),
                    "sk_proxied_0123456789".to_owned(),
                )])
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            },
        )
        .await?;
    registry
        .attach_project_with(
            &admin,
            &parsed(ConnectorRef::parse("api-key/proxied"))?,
            &parsed(ProjectRef::parse("prj_bench"))?,
            LinkTerms::lasting(parsed(EnvironmentSet::parse(&["production"]))?),
        )
        .await?;
    let (_, broker_key) = registry.create_api_key(None, Role::Broker).await?;
    let mut config = token_broker::BrokerConfig::local(
        stack.registry_url().to_owned(),
        broker_key.expose_secret().to_owned().into(),
        vec![issuer.issuer_url()],
        AUDIENCE.into(),
    );
    config.proxy_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.max_concurrent_requests = 4096;
    let app = token_broker::App::build(config).await?;
    let proxy = format!(
        "http://{}/api-key%2Fproxied",
        app.proxy_addr()
            .ok_or_else(|| anyhow::anyhow!("no proxy address"))?
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until(async {
        stopped.await.ok();
    }));
    let token = issuer.mint(
        &deployment_of("prj_bench"),
        Duration::from_secs(3600),
        Alg::ES256,
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    let get = |url: String, bearer: Option<String>| {
        let http = http.clone();
        move || {
            let (http, url, bearer) = (http.clone(), url.clone(), bearer.clone());
            async move {
                let mut request = http.get(&url);
                if let Some(bearer) = bearer {
                    request = request.bearer_auth(bearer);
                }
                let answer = request.send().await.expect("an answer");
                assert!(answer.status().is_success(), "{}", answer.status());
                answer.bytes().await.expect("a body");
            }
        }
    };
    // The broker is up once the proxy answers.
    for attempt in 0.. {
        let answer = http
            .get(format!("{proxy}/ping"))
            .bearer_auth(&token)
            .send()
            .await;
        if answer.is_ok_and(|a| a.status().is_success()) {
            break;
        }
        anyhow::ensure!(attempt < 500, "the proxy never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bare = bare_forwarder(upstream.clone()).await?;
    let bare_hyper = bare_hyper_forwarder(upstream.clone()).await?;
    let relay = tcp_relay(&upstream).await?;
    let mut rows = Vec::new();
    for concurrency in [1, 64] {
        // Five alternating rounds, each kind's median round kept: the machine's noise moves
        // whole rounds by 20-40 %.
        let (mut directs, mut forwardeds, mut proxieds) = (Vec::new(), Vec::new(), Vec::new());
        let (mut hypers, mut relays) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            relays.push(measure(concurrency, get(format!("{relay}/ping"), None)).await);
            hypers.push(measure(concurrency, get(format!("{bare_hyper}/ping"), None)).await);
            directs.push(measure(concurrency, get(format!("{upstream}/ping"), None)).await);
            forwardeds.push(measure(concurrency, get(format!("{bare}/ping"), None)).await);
            proxieds.push(
                measure(
                    concurrency,
                    get(format!("{proxy}/ping"), Some(token.clone())),
                )
                .await,
            );
        }
        let median = |mut rounds: Vec<Stats>| {
            rounds.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
            rounds.swap_remove(rounds.len() / 2)
        };
        let (direct, forwarded, proxied) = (median(directs), median(forwardeds), median(proxieds));
        let (hyper, relay) = (median(hypers), median(relays));
        println!(
            "proxy {concurrency:>3} callers: a TCP relay (bytes copied, no HTTP): {:.2} of direct, p50 {:>7.1?}, CPU {:.1?}",
            relay.per_second / direct.per_second,
            relay.p50,
            relay.cpu_per_call
        );
        println!(
            "proxy {concurrency:>3} callers: a bare forwarder with hyper-util's client: {:.2} of direct, p50 {:>7.1?}, CPU {:.1?}",
            hyper.per_second / direct.per_second,
            hyper.p50,
            hyper.cpu_per_call
        );
        let ratio = proxied.per_second / direct.per_second;
        println!(
            "proxy {concurrency:>3} callers: direct {:>8.0}/s p50 {:>7.1?} | proxied {:>8.0}/s p50 {:>7.1?} p99 {:>7.1?} | added p50 {:>7.1?} | throughput ratio {ratio:.2} | CPU {:.1?} vs {:.1?} per call | a bare forwarder: {:.2} of direct, p50 {:>7.1?}, CPU {:.1?}",
            direct.per_second,
            direct.p50,
            proxied.per_second,
            proxied.p50,
            proxied.p99,
            proxied.p50.saturating_sub(direct.p50),
            proxied.cpu_per_call,
            direct.cpu_per_call,
            forwarded.per_second / direct.per_second,
            forwarded.p50,
            forwarded.cpu_per_call,
        );
        for (scenario, stats, ratio) in [
            ("proxy direct", &direct, None),
            (
                "proxy bare forwarder",
                &forwarded,
                Some(forwarded.per_second / direct.per_second),
            ),
            (
                "proxy bare forwarder, hyper-util client",
                &hyper,
                Some(hyper.per_second / direct.per_second),
            ),
            (
                "proxy floor: TCP relay, no HTTP",
                &relay,
                Some(relay.per_second / direct.per_second),
            ),
            ("proxy via broker", &proxied, Some(ratio)),
        ] {
            rows.push(Row {
                scenario: scenario.into(),
                concurrency,
                calls_per_s: stats.per_second,
                p50_us: stats.p50.as_secs_f64() * 1e6,
                p99_us: stats.p99.as_secs_f64() * 1e6,
                cpu_us: Some(stats.cpu_per_call.as_secs_f64() * 1e6),
                ratio,
            });
        }
    }

    // 100 MB down through the proxy, read as it comes: the peak resident set against the one
    // before (reset to the current set first).
    const STREAM: u64 = 100 * 1024 * 1024;
    std::fs::write("/proc/self/clear_refs", "5")?;
    let before = peak_rss_bytes()?;
    let started = Instant::now();
    let answer = http
        .get(format!("{proxy}/big?bytes={STREAM}"))
        .bearer_auth(&token)
        .send()
        .await?;
    anyhow::ensure!(answer.status().is_success(), "{}", answer.status());
    let mut body = answer.bytes_stream();
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        total += chunk?.len() as u64;
    }
    let took = started.elapsed();
    anyhow::ensure!(total == STREAM, "{total} bytes of {STREAM}");
    let grown = peak_rss_bytes()?.saturating_sub(before);
    println!(
        "proxy stream: {} MB in {took:.1?} ({:.0} MB/s); peak resident memory grew by {:.1} MB\n",
        STREAM / (1024 * 1024),
        STREAM as f64 / 1e6 / took.as_secs_f64(),
        grown as f64 / 1e6
    );
    // `p50_us`/`p99_us` carry megabytes for this row.
    rows.push(row(
        "proxy stream 100 MB, RSS MB",
        1,
        STREAM as f64 / 1e6 / took.as_secs_f64(),
        grown as f64 / 1e6,
        grown as f64 / 1e6,
    ));
    stop.send(()).ok();
    serving.await??;
    stack.stop().await?;
    Ok(rows)
}
