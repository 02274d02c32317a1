//! `cargo bench --bench registry_scale [-- --sizes 1000,100000,1000000]`: the link registry at
//! growing sizes, on SQLite and (when `BENCH_DATABASE_URL` or `TEST_DATABASE_URL` names a
//! PostgreSQL server) on PostgreSQL. One team, five connectors, `size / 5` projects each linked to
//! every connector (so `size` links), and `size` audit events; seeded with a few `INSERT … SELECT`
//! statements copying rows the registry itself wrote (fast, and in its own formats).
//!
//! Per backend and size it prints: seeding rate, database size, restart time (a new server on
//! the database until its first answer), `Authorize` p50/p99 at one caller (5 000 calls after 500
//! to warm up), calls/s at 32 in flight (5 s; all over gRPC with a broker key, random linked
//! pairs), the same with a mix of allowed and denied questions (`mixed/s`: a quarter each of yes,
//! an unlinked environment, an unknown project and an unknown connector), the first and the last page (50 rows, median of twenty) of the links (all, of one
//! connector, of one project), projects and audit events, the rate of `AttachProject` calls
//! (2 000: 100 new links, 1 900 replaced), the mean of the first 16 `Authorize` calls after each
//! hundred attaches (a SQLite read connection drops its page cache at its first read after a
//! write), and the process's resident memory once the size was set up.
//!
//! Every size of a backend is seeded first, then measured in twenty rounds of reads and then
//! twenty rounds of writes, the sizes taking turns within each round (the calls at one caller
//! call by call), so that a slow spell of a shared machine falls on every size alike.
//!
//! `-- --backend sqlite|postgres` runs one backend only; `-- --keep` leaves the seeded databases
//! behind (their URLs printed) for a look at their plans.
//!
//! `-- --registry URL --admin-key K --broker-key K [--links N] [--pid PID]` measures `Authorize` on a registry
//! running as its own process instead (see [`against`]): the way to compare two builds alike.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use connect_proto::registry::v1::{
    self as pb, link_registry_client::LinkRegistryClient,
    registry_runtime_client::RegistryRuntimeClient,
};
use connect_runtime::BearerAuth;
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
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use secrecy::ExposeSecret;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

const ISSUER: &str = "https://oidc.example.test/scale";
const CONNECTORS: usize = 5;
const PAGE: i32 = 50;

type Client = LinkRegistryClient<InterceptedService<Channel, BearerAuth>>;
type Runtime = RegistryRuntimeClient<InterceptedService<Channel, BearerAuth>>;

fn parsed<T>(value: Result<T, String>) -> anyhow::Result<T> {
    value.map_err(anyhow::Error::msg)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--registry") {
        return against(&args).await;
    }
    let sizes: Vec<usize> = match args.iter().position(|a| a == "--sizes") {
        Some(i) => args
            .get(i + 1)
            .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default(),
        None => vec![1_000, 100_000],
    };
    let postgres = std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .ok();
    // `--keep`: leave the seeded databases for a look at them afterwards (their names printed);
    // `--backend sqlite|postgres`: only that one.
    let keep = args.iter().any(|a| a == "--keep");
    let only = args
        .iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let wanted = |backend: &str| only.as_deref().is_none_or(|o| o == backend);
    let dir = tempfile::tempdir()?;
    println!(
        "{:<9} {:>9} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}  pages first/last (ms): links, by connector, by project, projects, audit",
        "backend",
        "links",
        "seed/s",
        "db MiB",
        "restart",
        "auth p50",
        "auth p99",
        "aft write",
        "auth/s@32",
        "mixed/s",
        "attach/s",
    );
    if wanted("sqlite") {
        let mut subjects = Vec::new();
        for &size in &sizes {
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join(format!("scale-{size}.db")).display()
            );
            subjects.push(prepare("sqlite", &url, None, size, &dir).await?);
            if keep {
                println!("kept {url}");
            }
        }
        measure(subjects).await?;
    }
    if let Some(admin_url) = postgres.filter(|_| wanted("postgres")) {
        let admin = Database::connect(&admin_url).await?;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        let mut names = Vec::new();
        let result: anyhow::Result<()> = async {
            let mut subjects = Vec::new();
            for &size in &sizes {
                let name = format!("connect_scale_{size}_{}", std::process::id());
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await?;
                names.push(name.clone());
                let url = format!("{base}/{name}");
                subjects.push(prepare("postgres", &url, Some(&name), size, &dir).await?);
                if keep {
                    println!("kept {url}");
                }
            }
            measure(subjects).await
        }
        .await;
        if !keep {
            for name in names {
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
            }
        }
        result?;
    }
    if keep {
        let _ = dir.keep();
    }
    Ok(())
}

fn config(url: &str, dir: &tempfile::TempDir) -> anyhow::Result<ServeConfig> {
    let mut config = ServeConfig::local(url.to_owned());
    if url.starts_with("postgres") {
        let key = dir.path().join("scale-pg.key");
        link_registry::crypto::SecretCipher::from_key_file(&key, true)?;
        config.secret_key_file = Some(key);
    }
    Ok(config)
}

/// A running registry server and how to stop it.
struct Server {
    addr: std::net::SocketAddr,
    registry: Registry,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), link_registry::AppError>>,
}

async fn start(config: ServeConfig) -> anyhow::Result<Server> {
    let app = link_registry::App::build(config).await?;
    let (addr, registry) = (app.local_addr(), app.registry().clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    Ok(Server {
        addr,
        registry,
        stop,
        task,
    })
}

async fn channel(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

async fn client(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<Client> {
    Ok(LinkRegistryClient::with_interceptor(
        channel(addr).await?,
        BearerAuth::new(key)?,
    ))
}

async fn runtime(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<Runtime> {
    Ok(RegistryRuntimeClient::with_interceptor(
        channel(addr).await?,
        BearerAuth::new(key)?,
    ))
}

/// The team, its five connectors and one project linked to all of them, through the registry
/// itself; answers with the admin and broker keys.
async fn seed_templates(registry: &Registry) -> anyhow::Result<(String, String)> {
    let team = parsed(TeamId::parse("team_scale"))?;
    registry
        .create_team(NewTeam {
            id: team.clone(),
            slug: parsed(TeamSlug::parse("scale"))?,
            issuer: parsed(IssuerUrl::parse(ISSUER))?,
        })
        .await?;
    let (_, admin_key) = registry.create_api_key(Some(team), Role::Admin).await?;
    let (_, broker_key) = registry.create_api_key(None, Role::Broker).await?;
    let admin = registry.authenticate(admin_key.expose_secret()).await?;
    registry
        .create_project(
            &admin,
            NewProject {
                id: parsed(ProjectId::parse("prj_s0"))?,
                name: parsed(ProjectName::parse("s0"))?,
            },
        )
        .await?;
    for c in 0..=CONNECTORS {
        let secrets = SecretInput::parse([("api_key".to_owned(), format!("sk_{c}"))])
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        registry
            .create_connector(
                &admin,
                NewConnector {
                    uid: parsed(ConnectorUid::parse(&format!("api-key/c{c}")))?,
                    name: parsed(DisplayName::parse(&format!("c{c}")))?,
                    config: ConfigMap::from_stored(BTreeMap::new()),
                    secrets,
                },
            )
            .await?;
        // The last connector stays unlinked: the attach-rate row links it.
        if c < CONNECTORS {
            registry
                .attach_project(
                    &admin,
                    &parsed(ConnectorRef::parse(&format!("api-key/c{c}")))?,
                    &parsed(ProjectRef::parse("prj_s0"))?,
                    parsed(EnvironmentSet::parse(&["production", "preview"]))?,
                )
                .await?;
        }
    }
    Ok((
        admin_key.expose_secret().to_owned(),
        broker_key.expose_secret().to_owned(),
    ))
}

/// `size / 5` projects, each linked to the five connectors, and `size` audit events, copied from
/// the template rows. The copied events carry placeholder chain hashes (64 hex digits of their
/// number): nothing here verifies the chain, and an append reads only the newest hash.
async fn seed_bulk(db: &DatabaseConnection, size: usize) -> anyhow::Result<()> {
    let projects = size / CONNECTORS;
    let series = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {N})";
    let hex64 = |n: &str| match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => format!("lpad(to_hex({n}), 64, '0')"),
        _ => format!("printf('%064x', {n})"),
    };
    let (prev_hash, hash) = (hex64("n.i - 1"), hex64("n.i"));
    for statement in [
        format!(
            "INSERT INTO projects (team_id, id, name, created_at) {series} \
             SELECT p.team_id, 'prj_s' || n.i, 's' || n.i, p.created_at \
             FROM n, projects p WHERE p.id = 'prj_s0'"
        )
        .replace("{N}", &(projects - 1).to_string()),
        format!(
            "INSERT INTO project_links (team_id, connector_id, project_id, environments, created_at, updated_at) {series} \
             SELECT l.team_id, l.connector_id, 'prj_s' || n.i, l.environments, l.created_at, l.updated_at \
             FROM n, project_links l WHERE l.project_id = 'prj_s0'"
        )
        .replace("{N}", &(projects - 1).to_string()),
        format!(
            "INSERT INTO audit_events (team_id, actor, action, target, before, after, created_at, prev_hash, hash) {series} \
             SELECT a.team_id, a.actor, a.action, a.target || '#' || n.i, a.before, a.after, a.created_at, {prev_hash}, {hash} \
             FROM n, audit_events a WHERE a.id = (SELECT MAX(id) FROM audit_events WHERE action = 'project.attach')"
        )
        .replace("{N}", &size.to_string()),
    ] {
        db.execute_unprepared(&statement).await?;
    }
    Ok(())
}

async fn one_string(db: &DatabaseConnection, sql: &str) -> anyhow::Result<String> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no row: {sql}"))?;
    Ok(row.try_get_by_index::<String>(0)?)
}

fn token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{key}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn authorize(project: usize, connector: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        owner_id: "team_scale".into(),
        project_id: format!("prj_s{project}"),
        environment: "production".into(),
        issuer: ISSUER.into(),
        connector: connector.to_owned(),
        installation_id: String::new(),
    }
}

/// Warm-up calls at one caller before any is timed.
const WARM_UP: usize = 500;
/// Rounds of measurements; the sizes take turns within each round.
const ROUNDS: usize = 20;
/// Per round and size: `Authorize` calls timed at one caller, and how long 32 callers run.
const TIMED: usize = 250;
const IN_FLIGHT_FOR: Duration = Duration::from_millis(250);
/// Per round of attaches and size, the calls at one caller right after it, reported on their
/// own ("after writes"): each of the registry's SQLite read connections (at most 8) drops its
/// page cache at its first read after a write.
const AFTER_WRITES: usize = 16;

/// `Authorize` over `broker` at one caller, calls `from..to` of a fixed walk over random linked
/// pairs among `projects` projects and the five connectors; answers each call's time.
async fn one_caller(
    broker: &Runtime,
    projects: usize,
    calls: std::ops::Range<usize>,
) -> anyhow::Result<Vec<Duration>> {
    let mut one = broker.clone();
    let mut times = Vec::with_capacity(calls.len());
    for i in calls {
        let request = authorize(
            (i * 7919) % projects,
            &format!("api-key/c{}", i % CONNECTORS),
        );
        let started = Instant::now();
        one.authorize(request).await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

/// Which `Authorize` questions the callers at 32 in flight ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mix {
    /// Linked pairs only: every answer is a yes.
    Allowed,
    /// A quarter each: a linked pair (yes), its project in an environment the link lacks
    /// (CLIENT_NOT_ENABLED_FOR_ENVIRONMENT), an unknown project (CLIENT_NOT_LINKED_TO_PROJECT)
    /// and an unknown connector (CONNECTOR_NOT_FOUND).
    Mixed,
}

/// The `i`th question of a walk over `projects` projects: the answer it must get (`None`: yes).
fn question(i: usize, projects: usize, mix: Mix) -> (pb::AuthorizeRequest, Option<&'static str>) {
    let mut request = authorize(
        (i * 104_729) % projects,
        &format!("api-key/c{}", i % CONNECTORS),
    );
    let kind = if mix == Mix::Mixed { (i / 7) % 4 } else { 0 };
    let expected = match kind {
        0 => None,
        1 => {
            request.environment = "development".into();
            Some("CLIENT_NOT_ENABLED_FOR_ENVIRONMENT")
        }
        2 => {
            request.project_id = format!("prj_none{i}");
            Some("CLIENT_NOT_LINKED_TO_PROJECT")
        }
        _ => {
            request.connector = "api-key/none".into();
            Some("CONNECTOR_NOT_FOUND")
        }
    };
    (request, expected)
}

/// `Authorize` at 32 in flight for `run` (starting at `offset` of the walk): how many calls got
/// the answer their question must get.
async fn in_flight(
    broker: &Runtime,
    projects: usize,
    offset: usize,
    run: Duration,
    mix: Mix,
) -> anyhow::Result<usize> {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let until = Instant::now() + run;
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (mut broker, calls) = (broker.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = offset + t;
            while Instant::now() < until {
                let (request, expected) = question(i, projects, mix);
                let answer = broker.authorize(request).await;
                let reason = answer.as_ref().err().and_then(|status| {
                    tonic_types::StatusExt::get_details_error_info(status).map(|info| info.reason)
                });
                if reason.as_deref() == expected {
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += 32;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(calls.load(std::sync::atomic::Ordering::Relaxed))
}

/// `--registry URL --admin-key K --broker-key K [--links N] [--pid PID]`: `Authorize` against a registry
/// running elsewhere (another build, another machine) whose team `team_scale` trusts
/// `https://oidc.example.test/scale`. Its five connectors, `N / 5` projects and their links are
/// made through the admin API, so any version of the API since v1 can be measured alike.
async fn against(args: &[String]) -> anyhow::Result<()> {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{name} is required with --registry"))
    };
    let url = flag("--registry")?;
    let links: usize = flag("--links").map_or(Ok(1_000), |n| n.parse())?;
    let projects = (links / CONNECTORS).max(1);
    let channel = Channel::from_shared(url)?.connect().await?;
    let admin = LinkRegistryClient::with_interceptor(
        channel.clone(),
        BearerAuth::new(&flag("--admin-key")?)?,
    );
    let broker =
        RegistryRuntimeClient::with_interceptor(channel, BearerAuth::new(&flag("--broker-key")?)?);
    for c in 0..CONNECTORS {
        admin
            .clone()
            .create_connector(pb::CreateConnectorRequest {
                uid: format!("api-key/c{c}"),
                secrets: [("api_key".to_owned(), format!("sk_{c}"))].into(),
                ..Default::default()
            })
            .await?;
    }
    let started = Instant::now();
    let seeders = (0..16).map(|t| {
        let mut admin = admin.clone();
        async move {
            for p in (t..projects).step_by(16) {
                admin
                    .create_project(pb::CreateProjectRequest {
                        id: format!("prj_s{p}"),
                        name: format!("s{p}"),
                    })
                    .await?;
                for c in 0..CONNECTORS {
                    admin
                        .attach_project(pb::AttachProjectRequest {
                            connector: format!("api-key/c{c}"),
                            project: format!("prj_s{p}"),
                            environments: vec!["production".into(), "preview".into()],
                            expire_time: None,
                            ..Default::default()
                        })
                        .await?;
                }
            }
            anyhow::Ok(())
        }
    });
    for seeded in futures::future::join_all(seeders).await {
        seeded?;
    }
    let seed_rate = (projects * CONNECTORS) as f64 / started.elapsed().as_secs_f64();
    // With `--pid`, the registry process's CPU time (all threads) per call, from /proc.
    let pid = flag("--pid").ok();
    let cpu = || pid.as_deref().and_then(process_cpu);
    let cpu_before = cpu();
    one_caller(&broker, projects, 0..WARM_UP).await?;
    let mut times = one_caller(&broker, projects, WARM_UP..WARM_UP + 5_000).await?;
    times.sort();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    let answered = in_flight(&broker, projects, 0, Duration::from_secs(3), Mix::Allowed).await?;
    let per_second = answered as f64 / 3.0;
    let calls = (WARM_UP + times.len() + answered) as f64;
    let per_call = match (cpu_before, cpu()) {
        (Some(before), Some(after)) => format!(
            ", registry CPU {:.0} µs per call",
            (after - before).as_secs_f64() * 1e6 / calls
        ),
        _ => String::new(),
    };
    let cpu_before = cpu();
    let mixed = in_flight(&broker, projects, 0, Duration::from_secs(3), Mix::Mixed).await?;
    let mixed_per_call = match (cpu_before, cpu()) {
        (Some(before), Some(after)) => format!(
            ", registry CPU {:.0} µs per call",
            (after - before).as_secs_f64() * 1e6 / mixed.max(1) as f64
        ),
        _ => String::new(),
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "links {} (attached through gRPC at {seed_rate:.0}/s): Authorize p50 {:.3} ms, p99 {:.3} ms, {per_second:.0} calls/s at 32 in flight{per_call}",
        projects * CONNECTORS,
        ms(p50),
        ms(p99),
    );
    println!(
        "mixed allowed/denied (a quarter each: yes, environment, project, connector) at 32 in flight: {:.0} calls/s{mixed_per_call}",
        mixed as f64 / 3.0
    );
    Ok(())
}

/// User plus system time of every thread of process `pid` (`/proc/PID/stat`, in 1/100 s).
fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is 3rd, utime 14th, stime 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn prepare(
    backend: &'static str,
    url: &str,
    pg_name: Option<&str>,
    size: usize,
    dir: &tempfile::TempDir,
) -> anyhow::Result<Subject> {
    let projects = size / CONNECTORS;
    let server = start(config(url, dir)?).await?;
    let (admin_key, broker_key) = seed_templates(&server.registry).await?;
    let db = Database::connect(url).await?;
    let started = Instant::now();
    seed_bulk(&db, size).await?;
    if backend == "postgres" {
        // As a long-lived database is: vacuumed and analysed, so that autovacuum does not start
        // on the freshly copied rows in the middle of the measurements.
        db.execute_unprepared("VACUUM ANALYZE").await?;
    } else {
        // The copies went to the write-ahead log; moved into the database file now, so that
        // the first writes measured do not pay for checkpointing a gigabyte of seed.
        db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
            .await?;
    }
    let seed_rate = size as f64 / started.elapsed().as_secs_f64();
    let db_mib = match pg_name {
        Some(name) => {
            let row = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    format!("SELECT pg_database_size('{name}')"),
                ))
                .await?
                .ok_or_else(|| anyhow::anyhow!("no size"))?;
            row.try_get_by_index::<i64>(0)? as f64 / 1048576.0
        }
        None => {
            let path = url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            let len = |p: String| std::fs::metadata(p).map_or(0, |m| m.len());
            (len(path.clone()) + len(format!("{path}-wal"))) as f64 / 1048576.0
        }
    };

    // Restart: a new server on the seeded database, until its first answer.
    let _ = server.stop.send(());
    server.task.await??;
    let started = Instant::now();
    let server = start(config(url, dir)?).await?;
    let broker = runtime(server.addr, &broker_key).await?;
    broker.clone().authorize(authorize(0, "api-key/c0")).await?;
    let restart = started.elapsed();

    // First and last pages.
    let admin = client(server.addr, &admin_key).await?;
    let last_link = one_string(
        &db,
        &format!(
            "SELECT connector_id || '/' || project_id FROM project_links WHERE team_id = 'team_scale' \
             ORDER BY connector_id, project_id LIMIT 1 OFFSET {}",
            size - PAGE as usize - 1
        ),
    )
    .await?;
    let c0 = one_string(&db, "SELECT id FROM connectors WHERE uid = 'api-key/c0'").await?;
    let last_of_c0 = one_string(
        &db,
        &format!(
            "SELECT connector_id || '/' || project_id FROM project_links WHERE connector_id = '{c0}' \
             ORDER BY project_id LIMIT 1 OFFSET {}",
            projects - PAGE as usize - 1
        ),
    )
    .await?;
    let last_project = one_string(
        &db,
        &format!(
            "SELECT id FROM projects WHERE team_id = 'team_scale' ORDER BY id LIMIT 1 OFFSET {}",
            projects - PAGE as usize - 1
        ),
    )
    .await?;
    let oldest_audit = one_string(
        &db,
        &format!(
            "SELECT CAST(id AS TEXT) FROM audit_events WHERE team_id = 'team_scale' ORDER BY id LIMIT 1 OFFSET {PAGE}"
        ),
    )
    .await?;
    let lists = vec![
        (
            List::Links {
                connector: "",
                project: "",
            },
            token(&last_link),
        ),
        (
            List::Links {
                connector: "api-key/c0",
                project: "",
            },
            token(&last_of_c0),
        ),
        // One project's five links are one page: its "last" page is the first.
        (
            List::Links {
                connector: "",
                project: "s3",
            },
            String::new(),
        ),
        (List::Projects, token(&last_project)),
        (List::Audit, token(&oldest_audit)),
    ];
    Ok(Subject {
        backend,
        size,
        projects,
        seed_rate,
        db_mib,
        restart,
        rss_mib: rss_mib(),
        server,
        db,
        admin,
        broker,
        pages: vec![(Vec::new(), Vec::new()); lists.len()],
        lists,
        times: Vec::new(),
        after_writes: Vec::new(),
        answered: 0,
        mixed: 0,
        attaches: 0,
        attaching: Duration::ZERO,
    })
}

/// A list measured at its first and its last page.
#[derive(Debug, Clone, Copy)]
enum List {
    Links {
        connector: &'static str,
        project: &'static str,
    },
    Projects,
    Audit,
}

impl List {
    /// The time of one call for the page at `page_token`.
    async fn page(self, admin: &Client, page_token: String) -> anyhow::Result<Duration> {
        let mut admin = admin.clone();
        let started = Instant::now();
        match self {
            List::Links { connector, project } => {
                admin
                    .list_project_links(pb::ListProjectLinksRequest {
                        connector: connector.into(),
                        project: project.into(),
                        page_size: PAGE,
                        page_token,
                        ..Default::default()
                    })
                    .await?;
            }
            List::Projects => {
                admin
                    .list_projects(pb::ListProjectsRequest {
                        page_size: PAGE,
                        page_token,
                    })
                    .await?;
            }
            List::Audit => {
                admin
                    .list_audit_events(pb::ListAuditEventsRequest {
                        page_size: PAGE,
                        page_token,
                        ..Default::default()
                    })
                    .await?;
            }
        }
        Ok(started.elapsed())
    }
}

/// One seeded registry and what was measured on it.
struct Subject {
    backend: &'static str,
    size: usize,
    projects: usize,
    seed_rate: f64,
    db_mib: f64,
    restart: Duration,
    /// The bench process's resident memory once this size was set up (with the smaller sizes
    /// still open).
    rss_mib: f64,
    server: Server,
    db: DatabaseConnection,
    admin: Client,
    broker: Runtime,
    /// Each list, with the page token of its last page.
    lists: Vec<(List, String)>,
    /// Per list: first-page and last-page timings.
    pages: Vec<(Vec<Duration>, Vec<Duration>)>,
    /// `Authorize` at one caller, on a settled database.
    times: Vec<Duration>,
    /// `Authorize` at one caller, the first calls after a round of attaches.
    after_writes: Vec<Duration>,
    /// `Authorize` calls answered at 32 in flight.
    answered: usize,
    /// The same with a mix of allowed and denied questions.
    mixed: usize,
    attaches: usize,
    attaching: Duration,
}

/// Measures every size in turns: each of [`ROUNDS`] rounds runs a slice of every measurement on
/// each size (in alternating order), so a slow moment of a shared machine lands on all sizes
/// alike instead of on whichever size was being measured; then prints a row per size.
async fn measure(mut subjects: Vec<Subject>) -> anyhow::Result<()> {
    let sizes = subjects.len();
    let turns = |round: usize| {
        let mut order: Vec<usize> = (0..sizes).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        order
    };
    // Reads first, on settled databases.
    for s in &subjects {
        one_caller(&s.broker, s.projects, 0..WARM_UP).await?;
    }
    for round in 0..ROUNDS {
        let order = turns(round);
        // The timed calls at one caller go to the sizes in turn, call by call, so that a stall
        // of the machine (milliseconds, now and then) is as likely to hit any size's calls.
        let from = WARM_UP + round * TIMED;
        for call in from..from + TIMED {
            for &i in &order {
                let s = &mut subjects[i];
                let times = one_caller(&s.broker, s.projects, call..call + 1).await?;
                s.times.extend(times);
            }
        }
        for &i in &order {
            let s = &mut subjects[i];
            s.answered += in_flight(
                &s.broker,
                s.projects,
                round * 320_000,
                IN_FLIGHT_FOR,
                Mix::Allowed,
            )
            .await?;
            s.mixed += in_flight(
                &s.broker,
                s.projects,
                round * 320_000,
                IN_FLIGHT_FOR,
                Mix::Mixed,
            )
            .await?;
            for (list, (first, last)) in s.lists.iter().zip(s.pages.iter_mut()) {
                first.push(list.0.page(&s.admin, String::new()).await?);
                last.push(list.0.page(&s.admin, list.1.clone()).await?);
            }
        }
    }
    // Then writes: attaches of the unlinked connector to the first hundred projects, then rounds
    // that change their environments (100 links created, the others replaced), each round
    // followed by the first calls at one caller after it.
    let environments = [
        &["production"][..],
        &["preview"],
        &["production", "preview"],
        &["development"],
        &["production"],
    ];
    let after = WARM_UP + ROUNDS * TIMED;
    for round in 0..ROUNDS {
        let order = turns(round);
        for &i in &order {
            let s = &mut subjects[i];
            let mut admin = s.admin.clone();
            let started = Instant::now();
            for p in 0..100 {
                admin
                    .attach_project(pb::AttachProjectRequest {
                        connector: format!("api-key/c{CONNECTORS}"),
                        project: format!("prj_s{p}"),
                        environments: environments[round % environments.len()]
                            .iter()
                            .map(|e| e.to_string())
                            .collect(),
                        expire_time: None,
                        ..Default::default()
                    })
                    .await?;
            }
            s.attaching += started.elapsed();
            s.attaches += 100;
        }
        let from = after + round * AFTER_WRITES;
        for &i in &order {
            let s = &mut subjects[i];
            let times = one_caller(&s.broker, s.projects, from..from + AFTER_WRITES).await?;
            s.after_writes.extend(times);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for mut s in subjects {
        s.times.sort();
        let median = |times: &mut Vec<Duration>| {
            times.sort();
            times[times.len() / 2]
        };
        let pages = s
            .pages
            .iter_mut()
            .map(|(first, last)| format!("{:.1}/{:.1}", ms(median(first)), ms(median(last))))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:<9} {:>9} {:>10.0} {:>8.1} {:>7.2}s {:>7.3}ms {:>7.3}ms {:>7.3}ms {:>9.0} {:>9.0} {:>8.0}  {}   rss {:.0} MiB",
            s.backend,
            s.size,
            s.seed_rate,
            s.db_mib,
            s.restart.as_secs_f64(),
            ms(percentile(&s.times, 0.5)),
            ms(percentile(&s.times, 0.99)),
            ms(s.after_writes.iter().sum::<Duration>() / s.after_writes.len().max(1) as u32),
            s.answered as f64 / (IN_FLIGHT_FOR * ROUNDS as u32).as_secs_f64(),
            s.mixed as f64 / (IN_FLIGHT_FOR * ROUNDS as u32).as_secs_f64(),
            s.attaches as f64 / s.attaching.as_secs_f64(),
            pages,
            s.rss_mib,
        );
        let _ = s.server.stop.send(());
        s.server.task.await??;
        s.db.close().await?;
    }
    println!("bench process, every size open: rss {:.0} MiB", rss_mib());
    Ok(())
}
