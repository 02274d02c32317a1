//! The console in a real browser: Debian's Chromium, headless, driven through chromedriver with
//! WebDriver (`fantoccini`). Chromium reaches nothing but loopback (every other name resolves to
//! nothing, background networking is off). A failed step leaves a screenshot under
//! `target/browser-failures/`.
//!
//! Without `chromedriver` on the PATH the test says so and passes, unless
//! `CONNECT_REQUIRE_BROWSER` is set (CI sets it, after installing both packages).

use std::{path::PathBuf, process::Stdio, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::console::{ADA, ConsoleEnv};

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A chromedriver process, killed with the test.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free loopback port.
async fn chromedriver(path: &PathBuf) -> (Driver, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Driver(
        std::process::Command::new(path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (child, url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

async fn browser(driver: &str, profile: &std::path::Path) -> Client {
    let binary = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| find_on_path(b))
        .expect("a Chromium next to chromedriver");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-sync",
                "--metrics-recording-only",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(driver)
        .await
        .expect("a browser session")
}

/// Runs one step; when it fails, a screenshot is written and the test fails naming both.
async fn step<T>(
    client: &Client,
    name: &str,
    result: impl Future<Output = Result<T, fantoccini::error::CmdError>>,
) -> T {
    match result.await {
        Ok(value) => value,
        Err(e) => {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-failures");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{}.png", name.replace(' ', "-")));
            let url = client.current_url().await.map(|u| u.to_string());
            match client.screenshot().await {
                Ok(png) => {
                    let _ = std::fs::write(&path, png);
                }
                Err(shot) => eprintln!("no screenshot: {shot}"),
            }
            panic!(
                "browser step '{name}' failed at {url:?}: {e}; screenshot: {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_a_person_attaches_unticks_saves_detaches_and_the_audit_shows_it() {
    let Some(driver_path) = find_on_path("chromedriver") else {
        assert!(
            std::env::var_os("CONNECT_REQUIRE_BROWSER").is_none(),
            "CONNECT_REQUIRE_BROWSER is set but chromedriver is not on the PATH"
        );
        eprintln!("skipped: no chromedriver on the PATH (apt install chromium chromium-driver)");
        return;
    };
    let env = ConsoleEnv::start().await;
    let base = env.console.url.clone();
    let id = env.stripe_id.clone();
    let (_driver, driver_url) = chromedriver(&driver_path).await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver_url, profile.path()).await;

    step(&c, "open sign-in", c.goto(&format!("{base}/login"))).await;
    let link = step(
        &c,
        "find sign-in",
        c.find(Locator::LinkText("Sign in with your identity provider")),
    )
    .await;
    step(&c, "click sign-in", link.click()).await;
    let person = step(
        &c,
        "issuer page",
        c.wait().for_element(Locator::XPath(&format!(
            "//button[normalize-space()='Sign in as {ADA}']"
        ))),
    )
    .await;
    step(&c, "choose person", person.click()).await;
    let home = url::Url::parse(&format!("{base}/")).unwrap();
    step(&c, "back at the console", c.wait().for_url(&home)).await;

    step(
        &c,
        "open connector",
        c.goto(&format!("{base}/connectors/{id}")),
    )
    .await;
    let select = step(
        &c,
        "project select",
        c.find(Locator::Css("form.attach select[name=project]")),
    )
    .await;
    step(&c, "choose project", select.select_by_value("prj_web")).await;
    for env_name in ["production", "preview"] {
        let tick = step(
            &c,
            "find environment",
            c.find(Locator::Css(&format!(
                "form.attach input[name=environments][value={env_name}]"
            ))),
        )
        .await;
        step(&c, "tick environment", tick.click()).await;
    }
    let attach = step(
        &c,
        "find attach",
        c.find(Locator::XPath(
            "//form[contains(@class,'attach')]//button[normalize-space()='Attach']",
        )),
    )
    .await;
    step(&c, "attach", attach.click()).await;
    step(
        &c,
        "linked row",
        c.wait()
            .for_element(Locator::Css("[data-project=prj_web] input[value=preview]")),
    )
    .await;
    assert_eq!(
        env.link(&id, "prj_web").await.unwrap(),
        ["preview", "production"]
    );

    let preview = step(
        &c,
        "find preview",
        c.find(Locator::Css("[data-project=prj_web] input[value=preview]")),
    )
    .await;
    step(&c, "untick preview", preview.click()).await;
    let save = step(
        &c,
        "find save",
        c.find(Locator::XPath(
            "//*[@data-project='prj_web']//button[normalize-space()='Save']",
        )),
    )
    .await;
    step(&c, "save", save.click()).await;
    step(
        &c,
        "saved",
        c.wait().for_element(Locator::XPath(
            "//*[contains(@class,'flash') and contains(., 'in production.')]",
        )),
    )
    .await;
    assert_eq!(env.link(&id, "prj_web").await.unwrap(), ["production"]);

    let detach = step(
        &c,
        "find detach",
        c.find(Locator::XPath(
            "//*[@data-project='prj_web']//button[normalize-space()='Detach']",
        )),
    )
    .await;
    step(&c, "detach", detach.click()).await;
    step(
        &c,
        "detached",
        c.wait().for_element(Locator::XPath(
            "//*[contains(@class,'flash') and contains(., 'Detached web')]",
        )),
    )
    .await;
    assert_eq!(env.link(&id, "prj_web").await, None);

    step(
        &c,
        "open audit",
        c.goto(&format!("{base}/audit?actor=user:{ADA}")),
    )
    .await;
    let rows = step(&c, "audit rows", c.find_all(Locator::Css("tbody tr"))).await;
    let mut actions = Vec::new();
    for row in rows {
        let action = step(&c, "row action", row.attr("data-action")).await;
        let text = step(&c, "row text", row.text()).await;
        assert!(text.contains(&format!("user:{ADA}")), "{text}");
        actions.push(action.unwrap_or_default());
    }
    assert_eq!(
        actions,
        ["project.detach", "project.attach", "project.attach"],
        "the three changes, newest first, by the person"
    );
    c.close().await.unwrap();
}
