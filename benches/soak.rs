//! `cargo bench --bench soak -- --minutes N [--json FILE] [--callers C]`: the system under mixed
//! load for N minutes, watched for wrong answers and for growth.
//!
//! The link registry (SQLite) and the token broker run as two processes of their own (this program
//! started again with `--soak-role registry|broker`), reached over loopback as in production; the
//! dev OIDC issuer and the load run here. Forty projects each call `GetToken` from each of the
//! three environments (`C` callers, 32 by default, with pre-minted tokens) while a churner changes
//! one project's link every 200 ms (attach with another environment set, or detach).
//!
//! Every answer is judged against a model of the links: once a change is acknowledged and a
//! staleness bound (1 s) has passed, an allowed call must get the connector's key and a denied one
//! `CLIENT_NOT_LINKED_TO_PROJECT` or `CLIENT_NOT_ENABLED_FOR_ENVIRONMENT`; anything else is a
//! wrong answer (calls whose project changed within the bound are counted, not judged). Other
//! failures (timeouts, `UNAVAILABLE`) are counted as errors.
//!
//! Each minute a row: calls/s, judged calls, wrong answers, errors, link changes, and for each
//! process its resident memory, open file descriptors, threads and live tokio tasks (each server
//! writes its runtime's task count to a file every second). At the end: whether each process's
//! RSS stayed within 10 % of its value at minute 5 and whether file descriptors stayed flat.

use std::{
    collections::BTreeMap,
    io::BufRead,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use connect_proto::{
    broker::v1::{GetTokenRequest, token_broker_client::TokenBrokerClient},
    registry::v1::{self as rpb, link_registry_client::LinkRegistryClient},
};
use connect_runtime::BearerAuth;
use dev_issuer::{Alg, Deployment, DevIssuer};
use link_registry::{
    ServeConfig,
    domain::{
        model::Role,
        service::NewTeam,
        types::{IssuerUrl, TeamId, TeamSlug},
    },
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use secrecy::{ExposeSecret, SecretString};
use tonic::{metadata::MetadataValue, transport::Channel};

const AUDIENCE: &str = "https://vercel.com/soak";
const TEAM: &str = "team_soak";
const CONNECTOR: &str = "api-key/soak";
const KEY: &str = "sk_soak_value";
const PROJECTS: usize = 40;
const ENVIRONMENTS: [&str; 3] = ["production", "preview", "development"];
const STALENESS: Duration = Duration::from_secs(1);
const CHURN_EVERY: Duration = Duration::from_millis(200);

/// What a server child prints on its first stdout line.
#[derive(serde::Serialize, serde::Deserialize)]
struct Started {
    addr: SocketAddr,
    admin_key: Option<String>,
    broker_key: Option<String>,
}

/// Writes the runtime's live task count to `path` every second (to a file beside it, then
/// renamed, so that a reader never sees it half written).
fn report_tasks(path: PathBuf) {
    tokio::spawn(async move {
        let next = path.with_extension("next");
        loop {
            let tasks = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            let _ = std::fs::write(&next, tasks.to_string())
                .and_then(|()| std::fs::rename(&next, &path));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// `--soak-role registry|broker`: one server of the system, until killed.
async fn serve_role(role: &str, args: &[String]) -> anyhow::Result<()> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
            .ok_or_else(|| anyhow::anyhow!("{flag} is required"))
    };
    let dir = PathBuf::from(value("--dir")?);
    report_tasks(dir.join(format!("{role}.tasks")));
    let issuer = value("--issuer")?;
    match role {
        "registry" => {
            let app =
                link_registry::App::build(ServeConfig::local(value("--database-url")?)).await?;
            let registry = app.registry().clone();
            let team = TeamId::parse(TEAM).map_err(anyhow::Error::msg)?;
            registry
                .create_team(NewTeam {
                    id: team.clone(),
                    slug: TeamSlug::parse("soak").map_err(anyhow::Error::msg)?,
                    issuer: IssuerUrl::parse(&issuer).map_err(anyhow::Error::msg)?,
                })
                .await?;
            let (_, admin) = registry.create_api_key(Some(team), Role::Admin).await?;
            let (_, broker) = registry.create_api_key(None, Role::Broker).await?;
            let started = Started {
                addr: app.local_addr(),
                admin_key: Some(admin.expose_secret().to_owned()),
                broker_key: Some(broker.expose_secret().to_owned()),
            };
            println!("{}", serde_json::to_string(&started)?);
            app.run_until(std::future::pending()).await?;
        }
        "broker" => {
            let key = SecretString::from(std::env::var("SOAK_BROKER_KEY")?);
            let issuer = IssuerUrl::parse(&issuer).map_err(anyhow::Error::msg)?;
            let app = token_broker::App::build(token_broker::BrokerConfig::local(
                value("--registry-url")?,
                key,
                vec![issuer],
                AUDIENCE.into(),
            ))
            .await?;
            let started = Started {
                addr: app.local_addr(),
                admin_key: None,
                broker_key: None,
            };
            println!("{}", serde_json::to_string(&started)?);
            app.run_until(std::future::pending()).await?;
        }
        other => anyhow::bail!("--soak-role {other}: expected registry or broker"),
    }
    Ok(())
}

/// A server child, killed when dropped.
struct Child {
    process: std::process::Child,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn spawn_role(
    name: &'static str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(Child, Started)> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg("--soak-role")
        .arg(name)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut process = command.spawn()?;
    let stdout = process
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let child = Child { process };
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let started: Started = serde_json::from_str(line.trim())
        .map_err(|e| anyhow::anyhow!("{name} did not start: {e} ({line:?})"))?;
    Ok((child, started))
}

/// Resident memory (MiB), open file descriptors and threads of a process.
fn usage(pid: u32) -> (f64, usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (field("VmRSS:") / 1024.0, fds, field("Threads:") as usize)
}

fn tasks(dir: &Path, role: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(format!("{role}.tasks")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The links as acknowledged: each project's environments, and until when its answers are not
/// judged (a change in flight, or acknowledged less than [`STALENESS`] ago).
#[derive(Default)]
struct Model {
    links: BTreeMap<usize, (Vec<&'static str>, Option<Instant>)>,
}

impl Model {
    /// `Some(allowed)` when a call sent now is judged.
    fn expect(&self, project: usize, environment: &str) -> Option<bool> {
        let (envs, unsettled_until) = self.links.get(&project)?;
        match unsettled_until {
            Some(until) if Instant::now() < *until => None,
            _ => Some(envs.contains(&environment)),
        }
    }
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    judged: AtomicU64,
    wrong: AtomicU64,
    errors: AtomicU64,
    changes: AtomicU64,
}

#[derive(serde::Serialize)]
struct ProcessRow {
    rss_mib: f64,
    fds: usize,
    threads: usize,
    tasks: Option<u64>,
}

#[derive(serde::Serialize)]
struct MinuteRow {
    minute: u64,
    calls_per_s: f64,
    judged: u64,
    wrong_answers: u64,
    errors: u64,
    link_changes: u64,
    registry: ProcessRow,
    broker: ProcessRow,
    load_and_issuer: ProcessRow,
}

fn project_id(i: usize) -> String {
    format!("prj_soak_{i:02}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--soak-role") {
        let role = args.get(i + 1).cloned().unwrap_or_default();
        return serve_role(&role, &args).await;
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let minutes: u64 = flag("--minutes").map_or(Ok(1), |m| m.parse())?;
    let callers: usize = flag("--callers").map_or(Ok(32), |c| c.parse())?;
    let json = flag("--json");

    let dir = tempfile::tempdir()?;
    let dir_arg = dir.path().display().to_string();
    let issuer = DevIssuer::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("soak.db").display());
    let (registry, reg) = spawn_role(
        "registry",
        &[
            "--database-url",
            &database,
            "--dir",
            &dir_arg,
            "--issuer",
            issuer.issuer(),
        ],
        &[],
    )?;
    let broker_key = reg.broker_key.clone().unwrap_or_default();
    let (broker, brk) = spawn_role(
        "broker",
        &[
            "--registry-url",
            &format!("http://{}", reg.addr),
            "--dir",
            &dir_arg,
            "--issuer",
            issuer.issuer(),
        ],
        &[("SOAK_BROKER_KEY", &broker_key)],
    )?;
    println!(
        "registry pid {} at {}, broker pid {} at {}; {minutes} min, {callers} callers",
        registry.process.id(),
        reg.addr,
        broker.process.id(),
        brk.addr
    );

    // Seed: the connector, the projects, each linked for a first environment set.
    let registry_channel = Channel::from_shared(format!("http://{}", reg.addr))?
        .connect()
        .await?;
    let admin = LinkRegistryClient::with_interceptor(
        registry_channel,
        BearerAuth::new(&reg.admin_key.clone().unwrap_or_default())?,
    );
    admin
        .clone()
        .create_connector(rpb::CreateConnectorRequest {
            uid: CONNECTOR.into(),
            r#type: "api-key".into(),
            name: "soak".into(),
            config: Default::default(),
            secrets: [("api_key".to_owned(), KEY.to_owned())].into(),
        })
        .await?;
    let model = Arc::new(Mutex::new(Model::default()));
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..PROJECTS {
        admin
            .clone()
            .create_project(rpb::CreateProjectRequest {
                id: project_id(i),
                name: format!("soak-{i:02}"),
            })
            .await?;
        let envs: Vec<&'static str> = ENVIRONMENTS
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.5))
            .collect();
        if !envs.is_empty() {
            admin
                .clone()
                .attach_project(rpb::AttachProjectRequest {
                    connector: CONNECTOR.into(),
                    project: project_id(i),
                    environments: envs.iter().map(|e| e.to_string()).collect(),
                    expire_time: None,
                    ..Default::default()
                })
                .await?;
        }
        model
            .lock()
            .unwrap()
            .links
            .insert(i, (envs, Some(Instant::now() + STALENESS)));
    }

    // Tokens for every (project, environment), valid past the end of the run.
    let ttl = Duration::from_secs(minutes * 60 + 600);
    let tokens: Arc<Vec<Vec<MetadataValue<_>>>> = Arc::new(
        (0..PROJECTS)
            .map(|i| {
                ENVIRONMENTS
                    .iter()
                    .map(|env| {
                        let token = issuer.mint(
                            &Deployment {
                                owner: "soak".into(),
                                owner_id: TEAM.into(),
                                project: format!("soak-{i:02}"),
                                project_id: project_id(i),
                                environment: (*env).into(),
                                audience: AUDIENCE.into(),
                            },
                            ttl,
                            Alg::ES256,
                        );
                        format!("Bearer {token}").parse().expect("a token is ASCII")
                    })
                    .collect()
            })
            .collect(),
    );

    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + Duration::from_secs(minutes * 60);
    let broker_channel = Channel::from_shared(format!("http://{}", brk.addr))?
        .connect()
        .await?;
    let first_wrong = Arc::new(Mutex::new(Vec::<String>::new()));

    let mut load = Vec::new();
    for caller in 0..callers {
        let (channel, tokens, model, counters, first_wrong) = (
            broker_channel.clone(),
            tokens.clone(),
            model.clone(),
            counters.clone(),
            first_wrong.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut client = TokenBrokerClient::new(channel);
            let mut rng = StdRng::seed_from_u64(caller as u64 + 100);
            while Instant::now() < deadline {
                let (project, env) = (rng.random_range(0..PROJECTS), rng.random_range(0..3));
                let expected = model.lock().unwrap().expect(project, ENVIRONMENTS[env]);
                let mut request = tonic::Request::new(GetTokenRequest {
                    connector: CONNECTOR.into(),
                    ..Default::default()
                });
                request
                    .metadata_mut()
                    .insert("authorization", tokens[project][env].clone());
                request.set_timeout(Duration::from_secs(5));
                let answer = client.get_token(request).await;
                counters.calls.fetch_add(1, Ordering::Relaxed);
                let got = match &answer {
                    Ok(response) if response.get_ref().token == KEY => Some(true),
                    Ok(_) => Some(false),
                    Err(status) if status.code() == tonic::Code::PermissionDenied => {
                        use tonic_types::StatusExt;
                        let reason = status
                            .get_error_details()
                            .error_info()
                            .map(|i| i.reason.clone())
                            .unwrap_or_default();
                        match reason.as_str() {
                            "CLIENT_NOT_LINKED_TO_PROJECT"
                            | "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT" => Some(false),
                            _ => None,
                        }
                    }
                    Err(_) => None,
                };
                let Some(got) = got else {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                // The model must still be settled after the answer: judged only then.
                let still = model.lock().unwrap().expect(project, ENVIRONMENTS[env]);
                if let (Some(expected), Some(still)) = (expected, still)
                    && expected == still
                {
                    counters.judged.fetch_add(1, Ordering::Relaxed);
                    if got != expected {
                        counters.wrong.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_wrong.lock().unwrap();
                        if first.len() < 5 {
                            first.push(format!(
                                "{} in {}: expected {}, got {answer:?}",
                                project_id(project),
                                ENVIRONMENTS[env],
                                if expected { "allowed" } else { "denied" }
                            ));
                        }
                    }
                }
            }
        }));
    }

    // The churner: one project's link changes every 100 ms.
    let churn = {
        let (mut admin, model, counters) = (admin.clone(), model.clone(), counters.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(11);
            let mut tick = tokio::time::interval(CHURN_EVERY);
            while Instant::now() < deadline {
                tick.tick().await;
                let project = rng.random_range(0..PROJECTS);
                let envs: Vec<&'static str> = ENVIRONMENTS
                    .iter()
                    .copied()
                    .filter(|_| rng.random_bool(0.5))
                    .collect();
                // In flight: not judged until acknowledged and settled.
                if let Some(entry) = model.lock().unwrap().links.get_mut(&project) {
                    entry.1 = Some(Instant::now() + Duration::from_secs(3600));
                }
                let result = if envs.is_empty() {
                    admin
                        .detach_project(rpb::DetachProjectRequest {
                            connector: CONNECTOR.into(),
                            project: project_id(project),
                        })
                        .await
                        .map(|_| ())
                        .or_else(|s| {
                            if s.code() == tonic::Code::NotFound {
                                Ok(())
                            } else {
                                Err(s)
                            }
                        })
                } else {
                    admin
                        .attach_project(rpb::AttachProjectRequest {
                            connector: CONNECTOR.into(),
                            project: project_id(project),
                            environments: envs.iter().map(|e| e.to_string()).collect(),
                            expire_time: None,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                };
                let mut model = model.lock().unwrap();
                let entry = model.links.entry(project).or_default();
                match result {
                    Ok(()) => {
                        *entry = (envs, Some(Instant::now() + STALENESS));
                        counters.changes.fetch_add(1, Ordering::Relaxed);
                    }
                    // Unknown outcome: not judged again until a later change settles it.
                    Err(_) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // Per-minute rows.
    let pids = [
        ("registry", registry.process.id()),
        ("broker", broker.process.id()),
        ("load_and_issuer", std::process::id()),
    ];
    let row_of = |pid: u32, role: &str| {
        let (rss_mib, fds, threads) = usage(pid);
        ProcessRow {
            rss_mib,
            fds,
            threads,
            tasks: tasks(dir.path(), role),
        }
    };
    println!(
        "{:>6} {:>9} {:>9} {:>6} {:>6} {:>7} | {:>24} | {:>24} | {:>16}",
        "minute",
        "calls/s",
        "judged",
        "wrong",
        "errors",
        "changes",
        "registry MiB/fds/thr/tasks",
        "broker MiB/fds/thr/tasks",
        "load MiB/fds/thr"
    );
    let mut rows = Vec::new();
    let mut last = (0, 0, 0, 0, 0);
    for minute in 1..=minutes {
        let until = deadline - Duration::from_secs((minutes - minute) * 60);
        tokio::time::sleep_until(until.into()).await;
        let now = (
            counters.calls.load(Ordering::Relaxed),
            counters.judged.load(Ordering::Relaxed),
            counters.wrong.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
            counters.changes.load(Ordering::Relaxed),
        );
        let row = MinuteRow {
            minute,
            calls_per_s: (now.0 - last.0) as f64 / 60.0,
            judged: now.1 - last.1,
            wrong_answers: now.2 - last.2,
            errors: now.3 - last.3,
            link_changes: now.4 - last.4,
            registry: row_of(pids[0].1, "registry"),
            broker: row_of(pids[1].1, "broker"),
            load_and_issuer: row_of(pids[2].1, "load"),
        };
        last = now;
        let p = |r: &ProcessRow| {
            format!(
                "{:.1}/{}/{}/{}",
                r.rss_mib,
                r.fds,
                r.threads,
                r.tasks.map_or("-".into(), |t| t.to_string())
            )
        };
        println!(
            "{:>6} {:>9.0} {:>9} {:>6} {:>6} {:>7} | {:>24} | {:>24} | {:>16}",
            row.minute,
            row.calls_per_s,
            row.judged,
            row.wrong_answers,
            row.errors,
            row.link_changes,
            p(&row.registry),
            p(&row.broker),
            format!(
                "{:.1}/{}/{}",
                row.load_and_issuer.rss_mib, row.load_and_issuer.fds, row.load_and_issuer.threads
            ),
        );
        rows.push(row);
    }
    for task in load {
        task.await?;
    }
    churn.await?;

    // The verdicts.
    let wrong = counters.wrong.load(Ordering::Relaxed);
    println!(
        "\n{} calls, {} judged, {wrong} wrong answers, {} errors, {} link changes",
        counters.calls.load(Ordering::Relaxed),
        counters.judged.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        counters.changes.load(Ordering::Relaxed)
    );
    for w in first_wrong.lock().unwrap().iter() {
        println!("  wrong: {w}");
    }
    if let Some(at5) = rows.iter().find(|r| r.minute == 5) {
        let last = rows.last().expect("rows");
        for (name, five, end) in [
            ("registry", &at5.registry, &last.registry),
            ("broker", &at5.broker, &last.broker),
        ] {
            let growth = (end.rss_mib - five.rss_mib) / five.rss_mib * 100.0;
            println!(
                "{name}: RSS {:.1} MiB at minute 5, {:.1} MiB at the end ({growth:+.1} %, {}); fds {} → {}",
                five.rss_mib,
                end.rss_mib,
                if growth.abs() <= 10.0 {
                    "within 10 %"
                } else {
                    "OUTSIDE 10 %"
                },
                five.fds,
                end.fds
            );
        }
    } else {
        println!("(a run of 5 minutes or more compares memory against minute 5)");
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
        println!("rows written to {path}");
    }
    drop((registry, broker));
    issuer.stop().await;
    if wrong > 0 {
        anyhow::bail!("{wrong} wrong answers");
    }
    Ok(())
}
