//! The credential-injecting proxy against a loopback upstream that echoes what it received:
//! injection per `proxy_auth`, refusals as HTTP with the reason header and JSON body, no caller
//! credential or hop-by-hop header forwarded, no redirect followed, bodies streamed both ways,
//! HTTP/1.1 and h2, and the credential absent from answers and logs.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Query, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use connect_proto::registry::v1 as rpb;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{SecondBroker, Stack, captured_logs};

/// `GET url` with the deployment `token`, its JSON answer.
async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let answer = http.get(url).bearer_auth(token).send().await.unwrap();
    serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
}

const KEY: &str = "sk_proxy_0123456789abcdefghij";

#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    elsewhere: AtomicUsize,
    uploaded: AtomicU64,
}

struct Upstream {
    url: String,
    seen: Arc<Seen>,
}

/// Everything the upstream received, as JSON (the credential included: an echo API).
async fn echo(State(seen): State<Arc<Seen>>, request: Request) -> Json<Value> {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

/// Answers with the credential it received in a header of its own.
async fn tattle(State(seen): State<Arc<Seen>>, request: Request) -> Response {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    let auth = request
        .headers()
        .get("authorization")
        .cloned()
        .unwrap_or(axum::http::HeaderValue::from_static(""));
    (
        [("x-echo-authorization", auth)],
        format!("ok {}", KEY.len()),
    )
        .into_response()
}

/// Ignores `Accept-Encoding`: answers the credential it received gzip-compressed, or (`odd`) in
/// an encoding of its own.
async fn compressed(
    State(seen): State<Arc<Seen>>,
    axum::extract::Path(encoding): axum::extract::Path<String>,
    request: Request,
) -> Response {
    use std::io::Write;
    seen.calls.fetch_add(1, Ordering::SeqCst);
    let auth = request
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let plain = json!({ "authorization": auth }).to_string();
    let (encoding, body) = match encoding.as_str() {
        "gzip" => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(plain.as_bytes()).unwrap();
            ("gzip", encoder.finish().unwrap())
        }
        _ => ("x-odd", plain.into_bytes()),
    };
    ([("content-encoding", encoding)], body).into_response()
}

/// Answers after 700 ms.
async fn slow(State(seen): State<Arc<Seen>>) -> &'static str {
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    seen.calls.fetch_add(1, Ordering::SeqCst);
    "finally"
}

async fn redirect(State(seen): State<Arc<Seen>>) -> Response {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    (StatusCode::FOUND, [("location", "/elsewhere")], "").into_response()
}

async fn elsewhere(State(seen): State<Arc<Seen>>) -> &'static str {
    seen.elsewhere.fetch_add(1, Ordering::SeqCst);
    "followed"
}

#[derive(serde::Deserialize)]
struct Size {
    bytes: u64,
}

/// `bytes` bytes, 64 KiB at a time.
async fn download(Query(size): Query<Size>) -> Response {
    let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = size.bytes / chunk.len() as u64;
    let stream =
        futures::stream::iter(0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    (
        [("content-length", (chunks * 64 * 1024).to_string())],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Counts an upload as it streams in.
async fn upload(State(seen): State<Arc<Seen>>, body: Body) -> String {
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len() as u64;
    }
    seen.uploaded.store(total, Ordering::SeqCst);
    total.to_string()
}

impl Upstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/echo/{*rest}", any(echo))
            .route("/tattle", get(tattle))
            .route("/compressed/{encoding}", get(compressed))
            .route("/slow", get(slow))
            .route("/redirect", get(redirect))
            .route("/elsewhere", get(elsewhere))
            .route("/download", get(download))
            .route("/upload", post(upload))
            .with_state(seen.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, seen }
    }
}

async fn proxy_stack() -> (Stack, SecondBroker, String, Upstream) {
    let stack = Stack::start().await;
    let upstream = Upstream::start().await;
    let broker = stack
        .second_broker(|c| c.proxy_listen = Some("127.0.0.1:0".parse().unwrap()))
        .await;
    let proxy = format!("http://{}", broker.proxy_addr.unwrap());
    for (uid, auth) in [
        ("api-key/upstream", None),
        ("api-key/header", Some("header:X-Api-Key")),
        ("api-key/basic", Some("basic")),
    ] {
        let mut config = vec![("proxy_base_url", upstream.url.as_str())];
        if let Some(auth) = auth {
            config.push(("proxy_auth", auth));
            config.push(("proxy_basic_user", "AC0001"));
        }
        linked_key(&stack, uid, &config).await;
    }
    (stack, broker, proxy, upstream)
}

/// Acme's `api-key` connector `uid` (the key [`KEY`]) with `config`, linked to `prj_web` for
/// preview.
async fn linked_key(stack: &Stack, uid: &str, config: &[(&str, &str)]) {
    stack
        .linked_connector(uid, config, &[("api_key", KEY)])
        .await;
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The refusal's status, reason header and JSON body.
async fn refused(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let reason = response
        .headers()
        .get("connect-error-reason")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    (status, reason, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_injects_the_credential_and_never_hands_it_back() {
    let (stack, broker, proxy, upstream) = proxy_stack().await;
    let token = stack.acme.token("prj_web", "preview");
    let http = client();

    // Bearer (the default): path and query forwarded as sent; the caller's credentials, hop-by-hop
    // headers and Connect's own headers stay behind.
    let answer = http
        .post(format!(
            "{proxy}/api-key%2Fupstream/echo/v1/charges%2Fx?limit=3&expand[]=a"
        ))
        .bearer_auth(&token)
        .header("cookie", "session=deployment-cookie")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("x-request-id", "req-1")
        .header("connect-scopes", "")
        .body("amount=100")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    assert!(!text.contains(KEY), "the credential came back: {text}");
    let echo: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/v1/charges%2Fx");
    assert_eq!(echo["query"], "limit=3&expand[]=a");
    assert_eq!(echo["body"], "amount=100");
    let headers = echo["headers"].as_object().unwrap();
    // What the upstream received is masked on the way back, same length.
    assert_eq!(
        headers["authorization"],
        format!("Bearer {}", "*".repeat(KEY.len())).as_str()
    );
    assert_eq!(headers["x-request-id"], "req-1");
    assert_eq!(headers["accept-encoding"], "identity");
    for absent in ["cookie", "x-hop", "connect-scopes"] {
        assert!(
            !headers.contains_key(absent),
            "{absent} forwarded: {headers:?}"
        );
    }
    assert!(!text.contains(&token), "the deployment token was forwarded");

    // By connector id too; `header:` and `basic` injection.
    let connector = stack
        .admin(&stack.acme)
        .get_connector(rpb::GetConnectorRequest {
            connector: "api-key/header".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let echo = get_json(&http, &format!("{proxy}/{}/echo/x", connector.id), &token).await;
    assert_eq!(echo["headers"]["x-api-key"], "*".repeat(KEY.len()).as_str());
    assert!(echo["headers"].get("authorization").is_none());
    let echo = get_json(&http, &format!("{proxy}/api-key%2Fbasic/echo/x"), &token).await;
    let basic = echo["headers"]["authorization"].as_str().unwrap();
    assert!(basic.starts_with("Basic ***"), "{basic}");

    // A response header carrying the credential is dropped.
    let answer = http
        .get(format!("{proxy}/api-key%2Fupstream/tattle"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().get("x-echo-authorization").is_none());

    // Redirects are answered, not followed.
    let answer = http
        .get(format!("{proxy}/api-key%2Fupstream/redirect"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 302);
    assert_eq!(answer.headers()["location"], "/elsewhere");
    assert_eq!(upstream.seen.elsewhere.load(Ordering::SeqCst), 0);

    // h2 (prior knowledge) as well as HTTP/1.1.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let echo = get_json(&h2, &format!("{proxy}/api-key%2Fupstream/echo/h2"), &token).await;
    assert_eq!(echo["path"], "/echo/h2");

    // Each proxied request is a recorded hand-out of the one credential.
    let ledger = stack.ledger("api-key/upstream").await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].project_id, "prj_web");

    let logs = captured_logs();
    assert!(!logs.contains(KEY), "the credential in the logs");
    broker.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_as_get_token_does_before_reaching_the_upstream() {
    let (stack, broker, proxy, upstream) = proxy_stack().await;
    let http = client();
    let call = |path: &str, token: Option<String>| {
        let mut request = http.get(format!("{proxy}/{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let web = stack.acme.token("prj_web", "preview");
    let cases = [
        (
            "api-key%2Fupstream/echo/x",
            Some(stack.acme.token("prj_docs", "preview")),
            403,
            "CLIENT_NOT_LINKED_TO_PROJECT",
            "ClientNotLinkedToProjectError",
        ),
        (
            "api-key%2Fupstream/echo/x",
            Some(stack.acme.token("prj_web", "production")),
            403,
            "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
            "ClientNotEnabledForEnvironmentError",
        ),
        (
            "api-key%2Fupstream/echo/x",
            None,
            401,
            "INVALID_TOKEN",
            "InvalidTokenError",
        ),
        (
            "api-key%2Fupstream/echo/x",
            Some("not-a-token".to_owned()),
            401,
            "INVALID_TOKEN",
            "InvalidTokenError",
        ),
        (
            "api-key%2Fnope/echo/x",
            Some(web.clone()),
            404,
            "CONNECTOR_NOT_FOUND",
            "ConnectorNotFoundError",
        ),
        // A token of another team for acme's connector.
        (
            "api-key%2Fupstream/echo/x",
            Some(stack.globex.token("prj_web", "preview")),
            404,
            "CONNECTOR_NOT_FOUND",
            "ConnectorNotFoundError",
        ),
        // The stack's `api-key/stripe` has no proxy_base_url.
        (
            "api-key%2Fstripe/v1/charges",
            Some(web.clone()),
            412,
            "FAILED_PRECONDITION",
            "FailedPreconditionError",
        ),
        (
            "",
            Some(web.clone()),
            400,
            "INVALID_ARGUMENT",
            "InvalidArgumentError",
        ),
    ];
    for (path, token, status, reason, error) in cases {
        let (got, header, body) = refused(call(path, token).await.unwrap()).await;
        assert_eq!((got, header.as_str()), (status, reason), "{path}: {body}");
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body["error"], error, "{body}");
        assert!(
            body["message"].as_str().unwrap().starts_with(error),
            "{body}"
        );
    }
    // `connect-subject` asks as GetToken's subject does: api-key issues for the app only.
    let answer = http
        .get(format!("{proxy}/api-key%2Fupstream/echo/x"))
        .bearer_auth(&web)
        .header("connect-subject", "user:ada")
        .send()
        .await
        .unwrap();
    let (status, reason, _) = refused(answer).await;
    assert_eq!(
        (status, reason.as_str()),
        (412, "USER_AUTHORIZATION_REQUIRED")
    );
    assert_eq!(upstream.seen.calls.load(Ordering::SeqCst), 0);

    // A base with a path: `..` (sent raw, as a client that does not normalize would) cannot
    // climb above it.
    linked_key(
        &stack,
        "api-key/scoped",
        &[("proxy_base_url", &format!("{}/echo", upstream.url))],
    )
    .await;
    let raw = |path: &'static str| {
        let (addr, web) = (broker.proxy_addr.unwrap(), web.clone());
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
            socket
                .write_all(
                    format!(
                        "GET {path} HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {web}\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await
                .unwrap();
            let mut answer = String::new();
            socket.read_to_string(&mut answer).await.unwrap();
            answer
        }
    };
    for climbing in [
        "/api-key%2Fscoped/../tattle",
        "/api-key%2Fscoped/%2e%2e/tattle",
        "/api-key%2Fscoped/a/../../tattle",
    ] {
        let answer = raw(climbing).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{climbing}: {answer}");
        assert!(answer.contains("INVALID_ARGUMENT"), "{answer}");
    }
    assert_eq!(upstream.seen.calls.load(Ordering::SeqCst), 0);
    let inside = raw("/api-key%2Fscoped/inside/x").await;
    assert!(inside.starts_with("HTTP/1.1 200"), "{inside}");
    assert!(inside.contains("\"path\":\"/echo/inside/x\""), "{inside}");

    // An upstream that does not answer: 502.
    linked_key(
        &stack,
        "api-key/gone",
        &[("proxy_base_url", "http://127.0.0.1:9")],
    )
    .await;
    let (status, reason, body) = refused(call("api-key%2Fgone/x", Some(web)).await.unwrap()).await;
    assert_eq!(
        (status, reason.as_str()),
        (502, "PROVIDER_UNAVAILABLE"),
        "{body}"
    );
    assert_eq!(body["error"], "ProviderUnavailableError");
    assert_eq!(
        body["message"],
        "ProviderUnavailableError: the connector's proxy_base_url did not answer"
    );
    broker.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_through_the_proxy_both_ways() {
    let (stack, broker, proxy, upstream) = proxy_stack().await;
    let token = stack.acme.token("prj_web", "preview");
    let http = client();
    const SIZE: u64 = 32 * 1024 * 1024;

    // Down: 32 MiB, read chunk by chunk.
    let answer = http
        .get(format!("{proxy}/api-key%2Fupstream/download?bytes={SIZE}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.content_length(), Some(SIZE));
    let mut stream = answer.bytes_stream();
    let (mut total, mut chunks) = (0u64, 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.iter().all(|b| *b == b'x'));
        total += chunk.len() as u64;
        chunks += 1;
    }
    assert_eq!(total, SIZE);
    assert!(chunks > 1, "not streamed");

    // Up: 32 MiB of unknown length (chunked), counted by the upstream as it arrives.
    let piece = axum::body::Bytes::from(vec![b'y'; 256 * 1024]);
    let body = futures::stream::iter(0..SIZE / piece.len() as u64)
        .map(move |_| Ok::<_, std::io::Error>(piece.clone()));
    let answer = http
        .post(format!("{proxy}/api-key%2Fupstream/upload"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), SIZE.to_string());
    assert_eq!(upstream.seen.uploaded.load(Ordering::SeqCst), SIZE);
    broker.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_compressed_all_the_same_is_decoded_and_masked_or_refused() {
    let (stack, broker, proxy, upstream) = proxy_stack().await;
    let token = stack.acme.token("prj_web", "preview");
    let http = client();

    // Asked for `identity`, the upstream gzips anyway: the caller gets the decoded answer, masked.
    let answer = http
        .get(format!("{proxy}/api-key%2Fupstream/compressed/gzip"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().get("content-encoding").is_none());
    let text = answer.text().await.unwrap();
    let echo: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        echo["authorization"],
        format!("Bearer {}", "*".repeat(KEY.len())).as_str()
    );

    // A head-only answer claiming gzip (no body to decode) passes as it is.
    let answer = http
        .head(format!("{proxy}/api-key%2Fupstream/compressed/gzip"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.bytes().await.unwrap().is_empty());

    // An encoding the proxy cannot read is refused rather than passed on unmasked.
    let answer = http
        .get(format!("{proxy}/api-key%2Fupstream/compressed/odd"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, reason, body) = refused(answer).await;
    assert_eq!((status, reason.as_str()), (502, "PROVIDER_UNAVAILABLE"));
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("Content-Encoding"), "{message}");
    assert!(!body.to_string().contains(KEY));
    assert_eq!(upstream.seen.calls.load(Ordering::SeqCst), 3);

    assert!(!captured_logs().contains(KEY), "the credential in the logs");
    broker.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_slow_to_send_its_request_head_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start().await;
    let broker = stack
        .second_broker(|c| {
            c.proxy_listen = Some("127.0.0.1:0".parse().unwrap());
            c.request_read_timeout = std::time::Duration::from_millis(500);
        })
        .await;
    let mut slow = tokio::net::TcpStream::connect(broker.proxy_addr.unwrap())
        .await
        .unwrap();
    slow.write_all(b"GET /api-key%2Fupstream/x HTTP/1.1\r\nHost: proxy\r\n")
        .await
        .unwrap();
    let at = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slow.read_to_end(&mut answer),
    )
    .await
    .expect("the connection was not closed")
    .unwrap();
    assert!(at.elapsed() >= std::time::Duration::from_millis(500));
    assert!(!String::from_utf8_lossy(&answer).contains("200"));
    broker.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_request_in_flight_finishes_through_the_brokers_shutdown() {
    let (stack, broker, proxy, upstream) = proxy_stack().await;
    let token = stack.acme.token("prj_web", "preview");
    let addr = broker.proxy_addr.unwrap();
    let http = client();
    let in_flight = tokio::spawn({
        let (http, url) = (http.clone(), format!("{proxy}/api-key%2Fupstream/slow"));
        async move {
            let answer = http.get(url).bearer_auth(token).send().await.unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    assert_eq!(upstream.seen.calls.load(Ordering::SeqCst), 0);
    // The broker stops only once the request in flight has its answer.
    broker.stop().await;
    assert_eq!(upstream.seen.calls.load(Ordering::SeqCst), 1);
    assert_eq!(in_flight.await.unwrap(), (200, "finally".to_owned()));
    // Stopped: nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    stack.stop().await;
}
