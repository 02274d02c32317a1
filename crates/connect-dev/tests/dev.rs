//! `connect-dev` run as a person runs it, three times on one database: the second run reuses the
//! first run's demo and keys and writes nothing; a demo link changed in between is put back, and
//! the run says so; log lines that go to a pipe carry no colour codes.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::Arc,
};

use link_registry::{
    app::open_store,
    crypto::SecretCipher,
    domain::{
        Registry,
        types::{ConnectorRef, EnvironmentSet, ProjectRef},
    },
};

/// Ports free now, for every listener of the runs (the same in each run, as a person's would be).
fn free_ports() -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..7)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// One run until its printout is complete: the printout and stderr so far; then stopped as
/// Ctrl-C would (SIGTERM).
fn run_once(database_url: &str, ports: &[String]) -> (String, String) {
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_connect-dev"))
        .args([
            "--database-url",
            database_url,
            "--issuer-listen",
            &ports[0],
            "--registry-listen",
            &ports[1],
            "--broker-listen",
            &ports[2],
            "--callback-listen",
            &ports[3],
            "--provider-listen",
            &ports[4],
            "--proxy-listen",
            &ports[5],
            "--connect-issuer-listen",
            &ports[6],
        ])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connect-dev runs");
    // The printout is read to its end (the pipe stays open until the process exits).
    let stdout = child.stdout.take().unwrap();
    let (printed_tx, printed_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut printed = String::new();
        let mut told = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            printed.push_str(&line);
            printed.push('\n');
            // The printout ends with the command of ada's token, after this line.
            if !told && printed.contains("ada's token, from her grant") && line.contains("GetToken")
            {
                told = true;
                let _ = printed_tx.send(printed.clone());
            }
        }
        printed
    });
    let printed = printed_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("connect-dev printed its banner");
    proxy_as_printed(&printed);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let exit = child.wait().unwrap();
    let everything = reader.join().unwrap();
    assert!(exit.success(), "{exit:?}\n{everything}\n{stderr}");
    (printed, stderr)
}

/// Runs the banner's proxy call (its `curl`) over a plain socket: the demo API answers with the
/// Authorization it was sent, the key injected by the proxy and masked on the way back.
fn proxy_as_printed(printed: &str) {
    use std::io::{Read, Write};
    let curl = printed
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("curl -H 'Authorization: Bearer ")
        })
        .unwrap_or_else(|| panic!("no proxy call in {printed}"));
    let rest = curl.split("Bearer ").nth(1).unwrap();
    let (token, url) = rest.split_once("' ").unwrap();
    let url = url.trim().strip_prefix("http://").unwrap();
    let (addr, path) = url.split_once('/').unwrap();
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    write!(
        socket,
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\"authorization\":\"Bearer ******"),
        "{answer}"
    );
    assert!(!answer.contains("sk_demo_"), "{answer}");
}

fn admin_key_of(printed: &str) -> String {
    printed
        .split("admin key: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no admin key in {printed}"))
        .to_owned()
}

/// The registry on the runs' database, as an operator's command opens it.
async fn registry(database_url: &str, key_file: &std::path::Path) -> Registry {
    let store = open_store(database_url).await.unwrap();
    Registry::new(
        Arc::new(store),
        SecretCipher::from_key_file(key_file, false).unwrap(),
    )
}

async fn attach_events(registry: &Registry) -> usize {
    let mut count = 0;
    let window = (
        chrono::DateTime::UNIX_EPOCH,
        chrono::Utc::now() + chrono::TimeDelta::hours(1),
    );
    registry
        .export_audit(None, window, |event| {
            if event.action == "project.attach" {
                count += 1;
            }
            Ok(())
        })
        .await
        .unwrap();
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_reuses_the_demo_and_its_keys_and_says_when_it_resets_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let key_file = dir.path().join("dev.db.key");
    let ports = free_ports();

    let (first, stderr) = run_once(&url, &ports);
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr}"
    );
    assert!(stderr.contains("serving"), "{stderr}");
    let admin = admin_key_of(&first);
    // People sign in at the dev issuer, as the banner says.
    assert!(
        first.contains(&format!("connect login --issuer http://{}", ports[0])),
        "{first}"
    );
    let kept = dir.path().join("dev.db.dev-keys");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let operator = registry(&url, &key_file).await;
    let attaches = attach_events(&operator).await;
    assert_eq!(attaches, 2, "the two demo links");

    let (second, _) = run_once(&url, &ports);
    assert_eq!(admin_key_of(&second), admin, "the same admin key");
    assert!(!second.contains("reset"), "{second}");
    assert_eq!(operator.list_api_keys(None).await.unwrap().len(), 2);
    assert_eq!(attach_events(&operator).await, attaches, "nothing written");

    // Somebody enables the demo link for production too; the next run puts it back, and says so.
    let caller = operator.authenticate(&admin).await.unwrap();
    operator
        .attach_project(
            &caller,
            &ConnectorRef::parse("api-key/demo").unwrap(),
            &ProjectRef::parse("prj_demo").unwrap(),
            EnvironmentSet::parse(&["development", "production"]).unwrap(),
        )
        .await
        .unwrap();
    let (third, _) = run_once(&url, &ports);
    assert!(
        third.contains(
            "The demo link of api-key/demo had been changed to production, development: reset to development only."
        ) || third.contains(
            "The demo link of api-key/demo had been changed to development, production: reset to development only."
        ),
        "{third}"
    );
    assert_eq!(admin_key_of(&third), admin);
    assert_eq!(operator.list_api_keys(None).await.unwrap().len(), 2);
    assert_eq!(attach_events(&operator).await, attaches + 2);
}
