//! Plain HTTP listeners (the broker's proxy, OIDC issuer and consent callback, the console),
//! served with bounds a public endpoint needs and `axum::serve` does not set: a caller has
//! [`HttpLimits::header_read_timeout`] to send each request's head (HTTP/1.1; an idle keep-alive
//! connection counts as waiting for one, so it is closed after the same time), a silent HTTP/2
//! peer is found by keep-alive pings and dropped, and at most [`HttpLimits::max_connections`]
//! connections are served at once (further ones wait in the listen backlog until one closes).
//! Shutdown stops accepting, lets every connection finish its requests, and then returns.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::Request};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};
use tower::ServiceExt as _;

/// Bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// The longest a caller may take to send a request's head, and an idle HTTP/1.1 connection
    /// may wait for its next one.
    pub header_read_timeout: Duration,
    /// The most connections served at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// How often an HTTP/2 connection is pinged, and how long its answer may take.
const H2_KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(20));

/// Serves `router` on `listener` within `limits` until `shutdown` completes (then lets open
/// connections finish gracefully). Fails only if `limits` cannot be honoured.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    if limits.max_connections == 0 || limits.header_read_timeout.is_zero() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an HTTP listener needs room for a connection and time to read a request's head",
        ));
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closed) = watch::channel(());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE.0)
        .keep_alive_timeout(H2_KEEP_ALIVE.1);
    let builder = Arc::new(builder);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|request: Request<hyper::body::Incoming>| request.map(Body::new))
                .map_err(|never: Infallible| match never {}),
        );
        let (builder, mut closed) = (builder.clone(), closed.clone());
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = closed.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop((slot, closed));
        });
    }
    drop(listener);
    drop(closed);
    let _ = closing.send(());
    closing.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn started(
        limits: HttpLimits,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop, served)
    }

    /// What the server sends on `stream` until it closes it (or `within` passes).
    async fn read_all(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(within, stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn a_caller_slow_to_send_its_head_is_cut_off_and_connections_are_capped() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_millis(300),
            max_connections: 1,
        };
        let (addr, stop, served) = started(limits).await;

        // Half a request head, then nothing: closed once the timeout passes.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let at = Instant::now();
        // The one slot is taken: a second caller is not served while the first holds it.
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let early = read_all(&mut second, Duration::from_millis(150)).await;
        assert_eq!(early, "", "served beyond the cap");
        let cut = read_all(&mut slow, Duration::from_secs(10)).await;
        let waited = at.elapsed();
        assert!(!cut.contains("hello"), "{cut}");
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // The slot freed, the second caller is answered.
        let answer = read_all(&mut second, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello"), "{answer}");

        // An idle keep-alive connection is closed after the same time.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let at = Instant::now();
        let answer = read_all(&mut idle, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let idled = at.elapsed();
        assert!(idled >= Duration::from_millis(300), "{idled:?}");
        assert!(idled < Duration::from_secs(5), "{idled:?}");

        stop.send(()).unwrap();
        served.await.unwrap().unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still listening"
        );
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_in_flight_finish() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, router, HttpLimits::default(), async {
            let _ = stopped.await;
        }));
        let mut caller = tokio::net::TcpStream::connect(addr).await.unwrap();
        caller
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        let answer = read_all(&mut caller, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn limits_that_cannot_serve_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let limits = HttpLimits {
            max_connections: 0,
            ..HttpLimits::default()
        };
        let refused = serve(listener, Router::new(), limits, async {}).await;
        assert_eq!(
            refused.unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
    }
}
