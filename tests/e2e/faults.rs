//! Faults with real processes and real connections: PostgreSQL stopped the hard way and started
//! again under load, and the broker's connection to its registry cut and stalled again and again
//! while links flip. Every answer is judged against what the admins were told: zero wrong answers
//! and zero lost acknowledged writes. (A broker killed mid-refresh is in `grants.rs`; the registry
//! killed mid-write in the registry's own tests.)
//!
//! [`BrokerProcess`] runs a broker as a process of its own: this test binary started again to run
//! only [`a_broker_process`], which serves `token-broker serve`'s flags until killed.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use connect_proto::{
    broker::v1::{self as bpb, token_broker_client::TokenBrokerClient},
    registry::v1 as rpb,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::{AUDIENCE, Stack, StackOptions, all_pages, channel, wait_until_serving};

// ---------------------------------------------------------------------------------------------
// A broker as a process of its own.

const BROKER_ARGS: &str = "CONNECT_TEST_BROKER_ARGS";
const ADDR_LINE: &str = "connect-test-broker-addr=";

/// `token-broker serve` with the flags in `CONNECT_TEST_BROKER_ARGS` (a JSON array), printing
/// its address; run by [`BrokerProcess::spawn`] in a process of its own, and a no-op otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a broker process for the fault tests; they start it themselves"]
async fn a_broker_process() {
    use clap::Parser;
    let Ok(args) = std::env::var(BROKER_ARGS) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let cli = token_broker::config::Cli::try_parse_from(
        ["token-broker", "serve"]
            .into_iter()
            .map(String::from)
            .chain(args),
    )
    .unwrap();
    let token_broker::config::Command::Serve(serve) = cli.command;
    let app = token_broker::App::build(serve.into()).await.unwrap();
    println!("{ADDR_LINE}{}", app.local_addr());
    app.run_until(std::future::pending()).await.unwrap();
}

/// A broker of a [`Stack`]'s registry in a process of its own, killed (SIGKILL) when dropped.
pub struct BrokerProcess {
    child: std::process::Child,
    pub client: TokenBrokerClient<tonic::transport::Channel>,
}

impl BrokerProcess {
    /// A new broker key, both teams' issuers and `extra` flags; answers once it serves.
    pub async fn spawn(stack: &Stack, extra: &[&str]) -> Self {
        use secrecy::ExposeSecret;
        let (_, key) = stack
            .local()
            .registry()
            .create_api_key(None, link_registry::domain::model::Role::Broker)
            .await
            .unwrap();
        let mut args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--registry-url",
            stack.local().registry_url(),
            "--registry-key",
            key.expose_secret(),
            "--trusted-issuer",
            stack.acme.issuer.issuer_url().as_ref(),
            "--trusted-issuer",
            stack.globex.issuer.issuer_url().as_ref(),
            "--audience",
            AUDIENCE,
            "--allow-insecure-loopback",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "faults::a_broker_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(BROKER_ARGS, serde_json::to_string(&args).unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start this test binary again as a broker");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr: SocketAddr = tokio::task::spawn_blocking(move || {
            let addr = loop {
                let line = lines
                    .next()
                    .expect("the broker prints its address")
                    .unwrap();
                if let Some(addr) = line.strip_prefix(ADDR_LINE) {
                    break addr.parse().unwrap();
                }
            };
            // Keep draining, so that the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            addr
        })
        .await
        .unwrap();
        let broker = Self {
            child,
            client: TokenBrokerClient::new(channel(addr, None).await),
        };
        wait_until_serving(channel(addr, None).await).await;
        broker
    }

    /// SIGKILL: no shutdown, no cleanup.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Judging answers.

/// `Some(true)` for the connector's key, `Some(false)` for a link refusal, `None` for anything
/// that is neither (an outage: counted, not judged).
fn verdict(answer: &Result<tonic::Response<bpb::GetTokenResponse>, Status>) -> Option<bool> {
    match answer {
        Ok(r) => {
            assert_eq!(r.get_ref().token, "sk_acme_stripe");
            Some(true)
        }
        Err(status) if status.code() == Code::PermissionDenied => {
            let reason = status
                .get_error_details()
                .error_info()
                .map(|i| i.reason.clone())
                .unwrap_or_default();
            assert!(
                matches!(
                    reason.as_str(),
                    "CLIENT_NOT_LINKED_TO_PROJECT" | "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT"
                ),
                "{status:?}"
            );
            Some(false)
        }
        Err(status) => {
            assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                ),
                "an outage answers UNAVAILABLE or runs out of time, not {status:?}"
            );
            None
        }
    }
}

async fn get_token(
    client: &mut TokenBrokerClient<tonic::transport::Channel>,
    token: &str,
) -> Result<tonic::Response<bpb::GetTokenResponse>, Status> {
    let mut request = tonic::Request::new(bpb::GetTokenRequest {
        connector: "api-key/stripe".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.set_timeout(Duration::from_secs(5));
    client.get_token(request).await
}

/// Each project's link (attached for preview or not) as the admins were told, and until when a
/// call about it is not judged: from the moment a change is sent until `bound` after its
/// acknowledgement.
struct Links {
    bound: Duration,
    links: BTreeMap<usize, (bool, Option<Instant>)>,
}

impl Links {
    /// `Some(linked)` when a call sent now is judged.
    fn expect(&self, project: usize) -> Option<bool> {
        let (linked, unsettled_until) = self.links.get(&project).copied().unwrap_or_default();
        match unsettled_until {
            Some(until) if Instant::now() < until => None,
            _ => Some(linked),
        }
    }

    fn sending(&mut self, project: usize) {
        self.links.entry(project).or_default().1 = Some(Instant::now() + Duration::from_secs(3600));
    }

    fn acknowledged(&mut self, project: usize, linked: bool) {
        self.links
            .insert(project, (linked, Some(Instant::now() + self.bound)));
    }
}

#[derive(Default)]
struct Tally {
    judged: AtomicU64,
    allowed: AtomicU64,
    refused: AtomicU64,
    wrong: AtomicU64,
    outages: AtomicU64,
    first_wrong: Mutex<Vec<String>>,
}

impl Tally {
    /// Judges one answer about `project`: `before` and `after` are the model's expectation when
    /// the call was sent and when its answer came.
    fn judge(
        &self,
        project: usize,
        before: Option<bool>,
        after: Option<bool>,
        answer: &Result<tonic::Response<bpb::GetTokenResponse>, Status>,
    ) {
        let Some(got) = verdict(answer) else {
            self.outages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(expected) = before.filter(|_| before == after) else {
            return;
        };
        self.judged.fetch_add(1, Ordering::Relaxed);
        if got {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        if got != expected {
            self.wrong.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_wrong.lock().unwrap();
            if first.len() < 5 {
                first.push(format!(
                    "prj_f{project}: expected {expected}, got {:?}",
                    answer.as_ref().map(|_| "the key")
                ));
            }
        }
    }

    fn assert_no_wrong_answer(&self) {
        assert_eq!(
            self.wrong.load(Ordering::Relaxed),
            0,
            "{:?}",
            self.first_wrong.lock().unwrap()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A connection that can be cut.

/// A loopback TCP proxy to `upstream` whose connections the test cuts (closed at once) or stalls
/// (kept open, nothing forwarded, new ones held too) until the next cut.
pub(crate) struct Cutter {
    pub(crate) addr: SocketAddr,
    /// (generation, stalled): a connection lives for one generation.
    state: watch::Sender<(u64, bool)>,
}

impl Cutter {
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = watch::Sender::new((0, false));
        let states = state.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, upstream, states.subscribe()));
            }
        });
        Self { addr, state }
    }

    pub(crate) fn cut(&self) {
        self.state.send_modify(|(generation, stalled)| {
            *generation += 1;
            *stalled = false;
        });
    }

    pub(crate) fn stall(&self) {
        self.state.send_modify(|(_, stalled)| *stalled = true);
    }
}

async fn relay(
    mut inbound: TcpStream,
    upstream: SocketAddr,
    mut state: watch::Receiver<(u64, bool)>,
) {
    let (generation, stalled) = *state.borrow_and_update();
    let cut = |s: &(u64, bool)| s.0 != generation;
    if stalled {
        // Held: accepted, never answered, closed at the next cut.
        let _ = state.wait_for(cut).await;
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
        _ = state.wait_for(|s| cut(s) || s.1) => {}
    }
    // Stalled (the copy no longer runs, both sockets stay open) until the next cut.
    let _ = state.wait_for(cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_off_from_its_registry_again_and_again_never_answers_past_the_staleness_bound()
{
    const PROJECTS: usize = 6;
    const BOUND: Duration = Duration::from_millis(1000);
    // A heartbeat read just before a change commits but heard just after it vouches for the
    // feed for the bound from when it was heard, not read: an allowance for that delay on a
    // loaded machine.
    const SLACK: Duration = Duration::from_millis(300);
    let stack = Stack::start().await;
    let cutter = Cutter::start(stack.registry_addr()).await;
    let registry_url = format!("http://{}", cutter.addr);
    let broker = stack
        .second_broker(move |c| {
            c.registry_url = registry_url;
            c.authz_max_staleness = BOUND;
            c.registry_timeout = Duration::from_millis(500);
        })
        .await;
    let mut admin = stack.admin(&stack.acme);
    let links = Arc::new(Mutex::new(Links {
        bound: BOUND + SLACK,
        links: BTreeMap::new(),
    }));
    for i in 0..PROJECTS {
        admin
            .create_project(rpb::CreateProjectRequest {
                id: format!("prj_f{i}"),
                name: format!("f{i}"),
            })
            .await
            .unwrap();
        links.lock().unwrap().links.insert(i, (false, None));
    }
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..PROJECTS)
            .map(|i| stack.acme.token(&format!("prj_f{i}"), "preview"))
            .collect(),
    );

    let running = Arc::new(AtomicBool::new(true));
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for caller in 0..6u64 {
        let (links, tally, tokens, running) = (
            links.clone(),
            tally.clone(),
            tokens.clone(),
            running.clone(),
        );
        let mut client = TokenBrokerClient::new(channel(broker.addr(), None).await);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(caller);
            while running.load(Ordering::Relaxed) {
                let project = rng.random_range(0..PROJECTS);
                let before = links.lock().unwrap().expect(project);
                let answer = get_token(&mut client, &tokens[project]).await;
                let after = links.lock().unwrap().expect(project);
                tally.judge(project, before, after, &answer);
            }
        }));
    }
    // The flipper: one project's link changes every 500 ms (straight to the registry), so each
    // link holds for 3 s, judged after the bound.
    let changes = Arc::new(AtomicU64::new(0));
    tasks.push({
        let (links, running, changes) = (links.clone(), running.clone(), changes.clone());
        let mut admin = admin.clone();
        tokio::spawn(async move {
            let mut project = 0;
            while running.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                project = (project + 1) % PROJECTS;
                let linked = links.lock().unwrap().links[&project].0;
                links.lock().unwrap().sending(project);
                if linked {
                    admin
                        .detach_project(rpb::DetachProjectRequest {
                            connector: "api-key/stripe".into(),
                            project: format!("prj_f{project}"),
                        })
                        .await
                        .unwrap();
                } else {
                    admin
                        .attach_project(rpb::AttachProjectRequest {
                            connector: "api-key/stripe".into(),
                            project: format!("prj_f{project}"),
                            environments: vec!["preview".into()],
                            expire_time: None,
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
                links.lock().unwrap().acknowledged(project, !linked);
                changes.fetch_add(1, Ordering::Relaxed);
            }
        })
    });

    // Twelve rounds: cut; 600 ms; stall 1.5 s (longer than the bound); cut; 400 ms.
    for _ in 0..12 {
        cutter.cut();
        tokio::time::sleep(Duration::from_millis(600)).await;
        cutter.stall();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cutter.cut();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    running.store(false, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    tally.assert_no_wrong_answer();
    let (judged, allowed, refused, outages) = (
        tally.judged.load(Ordering::Relaxed),
        tally.allowed.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.outages.load(Ordering::Relaxed),
    );
    eprintln!(
        "{judged} judged ({allowed} allowed, {refused} refused), {outages} outages, {} changes",
        changes.load(Ordering::Relaxed)
    );
    assert!(allowed > 50 && refused > 50, "{judged} judged");
    assert!(outages > 0, "the stalls must have been felt");

    // Recovery on its own: the connection is whole again, and a change reaches the broker.
    let mut client = TokenBrokerClient::new(channel(broker.addr(), None).await);
    for (project, linked) in [(0, true), (0, false), (1, true)] {
        let current = links.lock().unwrap().links[&project].0;
        if current != linked {
            if linked {
                stack
                    .attach(
                        &stack.acme,
                        "api-key/stripe",
                        &format!("prj_f{project}"),
                        &["preview"],
                    )
                    .await;
            } else {
                admin
                    .detach_project(rpb::DetachProjectRequest {
                        connector: "api-key/stripe".into(),
                        project: format!("prj_f{project}"),
                    })
                    .await
                    .unwrap();
            }
            links.lock().unwrap().acknowledged(project, linked);
        }
        let changed = Instant::now();
        loop {
            let answer = get_token(&mut client, &tokens[project]).await;
            if verdict(&answer) == Some(linked) {
                break;
            }
            assert!(
                changed.elapsed() < BOUND + Duration::from_secs(5),
                "the broker never recovered: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    broker.stop().await;
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A PostgreSQL server of the test's own, to stop and start.

/// A PostgreSQL cluster in a temporary directory on a free loopback port (trust authentication,
/// user `connect`), run as `postgres` when the test runs as root.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
}

impl Postgres {
    /// `None` when no PostgreSQL server binaries are installed (outside CI only).
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max();
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL's server binaries must be installed under CI"
            );
            eprintln!("no PostgreSQL server binaries: skipping");
            return None;
        };
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let dir = tempfile::tempdir().unwrap();
        if as_root {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let postgres = Self {
            bin,
            dir,
            port,
            as_root,
        };
        postgres.run(
            "initdb",
            &[
                "-D",
                &postgres.data().display().to_string(),
                "-U",
                "connect",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        postgres.start_again();
        Some(postgres)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://connect@127.0.0.1:{}/postgres", self.port)
    }

    /// `tool` with `args`, as `postgres` when the test is root.
    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let mut command = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        };
        command.args(args);
        command
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let output = self.command(tool, args).output().unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let (data, log) = (self.data(), self.dir.path().join("log"));
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// As a crash: every server process ends at once, recovery replays the WAL on the next start.
    fn stop_immediately(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for Postgres {
    /// Stops the server if it runs, asserting nothing: a panic here while a failed test unwinds
    /// would abort the whole test binary.
    fn drop(&mut self) {
        let data = self.data();
        if Path::new(&data).join("postmaster.pid").exists() {
            let data = data.display().to_string();
            let _ = self
                .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

type Outage = Option<(Instant, Option<Instant>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_stopped_under_load_fails_closed_then_recovers_with_every_acknowledged_write() {
    const PROJECTS: usize = 400;
    const BOUND: Duration = Duration::from_millis(1000);
    // As above: a heartbeat is trusted from when it was heard.
    const SLACK: Duration = Duration::from_millis(300);
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.url();
    let key_file = postgres.dir.path().join("registry.key");
    link_registry::crypto::SecretCipher::from_key_file(&key_file, true).unwrap();
    let stack = Stack::start_with_options(StackOptions {
        registry: Box::new(move |c| {
            c.database_url = url;
            c.secret_key_file = Some(key_file);
        }),
        broker: Box::new(|c| {
            c.authz_max_staleness = BOUND;
            c.registry_timeout = Duration::from_millis(500);
        }),
        ..Default::default()
    })
    .await;
    let mut admin = stack.admin(&stack.acme);
    for i in 0..PROJECTS {
        admin
            .create_project(rpb::CreateProjectRequest {
                id: format!("prj_f{i}"),
                name: format!("f{i}"),
            })
            .await
            .unwrap();
    }
    // Linked before the load, never asked about until PostgreSQL is down.
    let probe = PROJECTS - 1;
    stack
        .attach(
            &stack.acme,
            "api-key/stripe",
            &format!("prj_f{probe}"),
            &["preview"],
        )
        .await;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..PROJECTS)
            .map(|i| stack.acme.token(&format!("prj_f{i}"), "preview"))
            .collect(),
    );
    let links = Arc::new(Mutex::new(Links {
        bound: BOUND + SLACK,
        links: BTreeMap::new(),
    }));
    links.lock().unwrap().acknowledged(probe, true);

    // The writer attaches one project after another; what it was told is all that counts.
    let running = Arc::new(AtomicBool::new(true));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::<usize>::new()));
    let unanswered = Arc::new(Mutex::new(BTreeSet::<usize>::new()));
    let writer = {
        let (links, running, acknowledged, unanswered) = (
            links.clone(),
            running.clone(),
            acknowledged.clone(),
            unanswered.clone(),
        );
        let mut admin = admin.clone();
        tokio::spawn(async move {
            for project in 0..probe {
                if !running.load(Ordering::Relaxed) {
                    break;
                }
                links.lock().unwrap().sending(project);
                let mut request = tonic::Request::new(rpb::AttachProjectRequest {
                    connector: "api-key/stripe".into(),
                    project: format!("prj_f{project}"),
                    environments: vec!["preview".into()],
                    expire_time: None,
                    ..Default::default()
                });
                request.set_timeout(Duration::from_secs(2));
                match admin.attach_project(request).await {
                    Ok(_) => {
                        links.lock().unwrap().acknowledged(project, true);
                        acknowledged.lock().unwrap().insert(project);
                    }
                    // Perhaps committed, perhaps not: never judged again.
                    Err(_) => {
                        unanswered.lock().unwrap().insert(project);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Callers ask about projects the writer reached (and a few beyond it).
    let tally = Arc::new(Tally::default());
    // When PostgreSQL stopped, and when it started again.
    let down: Arc<Mutex<Outage>> = Arc::default();
    let answered_while_down = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for caller in 0..4u64 {
        let (links, tally, tokens, running, acknowledged, down, answered_while_down) = (
            links.clone(),
            tally.clone(),
            tokens.clone(),
            running.clone(),
            acknowledged.clone(),
            down.clone(),
            answered_while_down.clone(),
        );
        let mut client = stack.broker();
        callers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(caller);
            while running.load(Ordering::Relaxed) {
                let reached = acknowledged.lock().unwrap().last().map_or(0, |p| p + 1);
                let project = rng.random_range(0..(reached + 5).min(probe));
                let before = links.lock().unwrap().expect(project);
                let sent = Instant::now();
                let answer = get_token(&mut client, &tokens[project]).await;
                let after = links.lock().unwrap().expect(project);
                tally.judge(project, before, after, &answer);
                // Sent once the bound had passed since the stop, answered before the start:
                // no cached answer may still count, so nothing but an outage is right.
                let window = *down.lock().unwrap();
                if let Some((stopped, started)) = window
                    && sent > stopped + BOUND + SLACK
                    && started.is_none()
                    && verdict(&answer).is_some()
                {
                    answered_while_down.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres.stop_immediately();
    *down.lock().unwrap() = Some((Instant::now(), None));
    tokio::time::sleep(BOUND + SLACK).await;
    // A link made before the outage, never asked about: the broker cannot know it, so it says so.
    let mut client = stack.broker();
    let answer = get_token(&mut client, &tokens[probe]).await;
    assert_eq!(verdict(&answer), None, "{answer:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Marked before the start: the server may answer before `pg_ctl` returns.
    if let Some((_, started)) = &mut *down.lock().unwrap() {
        *started = Some(Instant::now());
    }
    let restarted = Instant::now();
    postgres.start_again();

    // Recovery without restarting anything: the probe's link and new attaches are served.
    loop {
        let answer = get_token(&mut client, &tokens[probe]).await;
        if verdict(&answer) == Some(true) {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "the broker never recovered: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written_before = acknowledged.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.store(false, Ordering::Relaxed);
    writer.await.unwrap();
    for caller in callers {
        caller.await.unwrap();
    }
    tally.assert_no_wrong_answer();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let unanswered = unanswered.lock().unwrap().clone();
    eprintln!(
        "{} acknowledged attaches, {} unanswered; {} judged, {} outages; recovered in {:?}",
        acknowledged.len(),
        unanswered.len(),
        tally.judged.load(Ordering::Relaxed),
        tally.outages.load(Ordering::Relaxed),
        restarted.elapsed()
    );
    assert_eq!(answered_while_down.load(Ordering::Relaxed), 0);
    assert!(tally.outages.load(Ordering::Relaxed) > 0);
    assert!(
        acknowledged.len() > written_before,
        "attaches go on after the restart"
    );

    // Every acknowledged attach is there, with exactly one audit event; the chain is whole.
    let links = all_pages(|page_token| {
        let mut admin = admin.clone();
        async move {
            let page = admin
                .list_project_links(rpb::ListProjectLinksRequest {
                    connector: "api-key/stripe".into(),
                    page_size: 200,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (page.links, page.next_page_token)
        }
    })
    .await;
    let mut linked = BTreeSet::new();
    for link in links {
        assert_eq!(link.environments, ["preview"]);
        linked.insert(link.project_id);
    }
    let events = all_pages(|page_token| {
        let mut admin = admin.clone();
        async move {
            let page = admin
                .list_audit_events(rpb::ListAuditEventsRequest {
                    action: "project.attach".into(),
                    page_size: 200,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (page.events, page.next_page_token)
        }
    })
    .await;
    let mut attach_events = BTreeMap::<String, usize>::new();
    for event in events {
        *attach_events.entry(event.target).or_default() += 1;
    }
    assert!(attach_events.values().all(|n| *n == 1), "{attach_events:?}");
    for project in &acknowledged {
        let id = format!("prj_f{project}");
        assert!(linked.contains(&id), "acknowledged {id} lost");
    }
    for id in linked.iter().filter(|id| *id != "prj_web") {
        let project: usize = id.trim_start_matches("prj_f").parse().unwrap();
        assert!(
            acknowledged.contains(&project) || unanswered.contains(&project) || project == probe,
            "{id} linked, never asked for"
        );
    }
    assert_eq!(attach_events.len(), linked.len(), "one event per link");
    assert!(matches!(
        stack.local().registry().verify_audit().await.unwrap(),
        link_registry::domain::service::ChainCheck::Whole { .. }
    ));
    stack.stop().await;
}
