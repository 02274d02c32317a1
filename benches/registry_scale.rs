//! `cargo bench --bench registry_scale [-- --sizes 1000,100000,1000000]`: the link registry at
//! growing sizes, on SQLite and (when `BENCH_DATABASE_URL` or `TEST_DATABASE_URL` names a
//! PostgreSQL server) on PostgreSQL. One team, five connectors, `size / 5` projects each linked to
//! every connector (so `size` links), and `size` audit events; seeded with a few `INSERT … SELECT`
//! statements copying rows the registry itself wrote (fast, and in its own formats).
//!
//! Per backend and size it prints: seeding rate, database size, restart time (a new server on
//! the database until its first answer), `Authorize` p50/p99 at one caller and calls/s at 32 in
//! flight (over gRPC with a broker key, random linked pairs), the first and the last page (50
//! rows, median of five) of the links (all, of one connector, of one project), projects and audit
//! events, the rate of `AttachProject` calls (500: 100 new links, 400 replaced), and the
//! process's resident memory.
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
use connect_proto::registry::v1::{self as pb, link_registry_client::LinkRegistryClient};
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
        "{:<9} {:>9} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8}  pages first/last (ms): links, by connector, by project, projects, audit",
        "backend",
        "links",
        "seed/s",
        "db MiB",
        "restart",
        "auth p50",
        "auth p99",
        "auth/s@32",
        "attach/s",
    );
    for &size in sizes.iter().filter(|_| wanted("sqlite")) {
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join(format!("scale-{size}.db")).display()
        );
        run("sqlite", &url, None, size, &dir).await?;
        if keep {
            println!("kept {url}");
        }
    }
    if let Some(admin_url) = postgres.filter(|_| wanted("postgres")) {
        for &size in &sizes {
            let name = format!("connect_scale_{size}_{}", std::process::id());
            let admin = Database::connect(&admin_url).await?;
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await?;
            let base = admin_url
                .rsplit_once('/')
                .map_or(admin_url.as_str(), |(b, _)| b);
            let url = format!("{base}/{name}");
            let result = run("postgres", &url, Some(&name), size, &dir).await;
            if keep {
                println!("kept {url}");
            } else {
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
            }
            result?;
        }
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

async fn client(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<Client> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(LinkRegistryClient::with_interceptor(
        channel,
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
/// the template rows.
async fn seed_bulk(db: &DatabaseConnection, size: usize) -> anyhow::Result<()> {
    let projects = size / CONNECTORS;
    let series = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {N})";
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
            "INSERT INTO audit_events (team_id, actor, action, target, before, after, created_at) {series} \
             SELECT a.team_id, a.actor, a.action, a.target || '#' || n.i, a.before, a.after, a.created_at \
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

/// The median of five timings of `call`.
async fn median<F, Fut>(mut call: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        call().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[2])
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

/// `Authorize` over `broker` for random linked pairs among `projects` projects and the five
/// connectors: p50 and p99 of 1 000 calls at one caller, then calls/s at 32 in flight for 3 s.
async fn authorize_load(
    broker: &Client,
    projects: usize,
) -> anyhow::Result<(Duration, Duration, f64)> {
    let mut one = broker.clone();
    let mut times = Vec::with_capacity(1000);
    for i in 0..1000 {
        let request = authorize(
            (i * 7919) % projects,
            &format!("api-key/c{}", i % CONNECTORS),
        );
        let started = Instant::now();
        one.authorize(request).await?;
        times.push(started.elapsed());
    }
    times.sort();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (mut broker, calls) = (broker.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while Instant::now() < until {
                let request = authorize(
                    (i * 104_729) % projects,
                    &format!("api-key/c{}", i % CONNECTORS),
                );
                if broker.authorize(request).await.is_ok() {
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += 32;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let per_second = calls.load(std::sync::atomic::Ordering::Relaxed) as f64 / 3.0;
    Ok((
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        per_second,
    ))
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
        LinkRegistryClient::with_interceptor(channel, BearerAuth::new(&flag("--broker-key")?)?);
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
    let (p50, p99, per_second) = authorize_load(&broker, projects).await?;
    let calls = 1000.0 + per_second * 3.0;
    let per_call = match (cpu_before, cpu()) {
        (Some(before), Some(after)) => format!(
            ", registry CPU {:.0} µs per call",
            (after - before).as_secs_f64() * 1e6 / calls
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

async fn run(
    backend: &str,
    url: &str,
    pg_name: Option<&str>,
    size: usize,
    dir: &tempfile::TempDir,
) -> anyhow::Result<()> {
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
    let mut broker = client(server.addr, &broker_key).await?;
    broker.authorize(authorize(0, "api-key/c0")).await?;
    let restart = started.elapsed();

    let (p50, p99, per_second) = authorize_load(&broker, projects).await?;

    // First and last pages.
    let mut admin = client(server.addr, &admin_key).await?;
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
    let mut pages: Vec<(Duration, Duration)> = Vec::new();
    for (connector, project, last) in [
        ("", "", token(&last_link)),
        ("api-key/c0", "", token(&last_of_c0)),
        ("", "s3", String::new()),
    ] {
        let list = |page_token: String| {
            let mut admin = admin.clone();
            let request = pb::ListProjectLinksRequest {
                connector: connector.into(),
                project: project.into(),
                page_size: PAGE,
                page_token,
            };
            async move {
                admin.list_project_links(request).await?;
                Ok(())
            }
        };
        let first = median(|| list(String::new())).await?;
        let last = median(|| list(last.clone())).await?;
        pages.push((first, last));
    }
    let list_projects = |page_token: String| {
        let mut admin = admin.clone();
        async move {
            admin
                .list_projects(pb::ListProjectsRequest {
                    page_size: PAGE,
                    page_token,
                })
                .await?;
            Ok(())
        }
    };
    let last = token(&last_project);
    pages.push((
        median(|| list_projects(String::new())).await?,
        median(|| list_projects(last.clone())).await?,
    ));
    let list_audit = |page_token: String| {
        let mut admin = admin.clone();
        async move {
            admin
                .list_audit_events(pb::ListAuditEventsRequest {
                    page_size: PAGE,
                    page_token,
                })
                .await?;
            Ok(())
        }
    };
    let last = token(&oldest_audit);
    pages.push((
        median(|| list_audit(String::new())).await?,
        median(|| list_audit(last.clone())).await?,
    ));

    // Attaches: the unlinked connector to the first hundred projects, then four more rounds that
    // change their environments (500 calls: 100 links created, 400 replaced).
    let environments = [
        &["production"][..],
        &["preview"],
        &["production", "preview"],
        &["development"],
        &["production"],
    ];
    let started = Instant::now();
    for round in environments {
        for p in 0..100 {
            admin
                .attach_project(pb::AttachProjectRequest {
                    connector: format!("api-key/c{CONNECTORS}"),
                    project: format!("prj_s{p}"),
                    environments: round.iter().map(|e| e.to_string()).collect(),
                })
                .await?;
        }
    }
    let attach_rate = 500.0 / started.elapsed().as_secs_f64();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:<9} {:>9} {:>10.0} {:>8.1} {:>7.2}s {:>7.3}ms {:>7.3}ms {:>9.0} {:>8.0}  {}   rss {:.0} MiB",
        backend,
        size,
        seed_rate,
        db_mib,
        restart.as_secs_f64(),
        ms(p50),
        ms(p99),
        per_second,
        attach_rate,
        pages
            .iter()
            .map(|(f, l)| format!("{:.1}/{:.1}", ms(*f), ms(*l)))
            .collect::<Vec<_>>()
            .join(", "),
        rss_mib(),
    );
    let _ = server.stop.send(());
    server.task.await??;
    db.close().await?;
    Ok(())
}
