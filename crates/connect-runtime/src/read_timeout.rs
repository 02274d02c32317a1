//! Callers that send a call's headers and then nothing cannot keep others out. Every call holds
//! one of the server's concurrency slots while it runs, and a unary call runs from its headers
//! on; [`ReadTimeoutLayer`] ends a call whose request has not fully arrived within the timeout
//! (`--request-read-timeout-ms`), with `DEADLINE_EXCEEDED`, which frees its slot. Server
//! reflection is exempt: its stream is bidirectional by design (a client may keep asking), and
//! the per-connection stream limit bounds it like any other call.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The path prefix of the calls the timeout does not cover.
const EXEMPT: &str = "/grpc.reflection.";

/// Ends calls whose request has not arrived in full within `timeout`.
#[derive(Clone, Copy, Debug)]
pub struct ReadTimeoutLayer {
    timeout: Duration,
}

impl ReadTimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for ReadTimeoutLayer {
    type Service = ReadTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ReadTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> tower::Service<http::Request<B>> for ReadTimeout<S>
where
    S: tower::Service<http::Request<tonic::body::Body>>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let exempt = request.uri().path().starts_with(EXEMPT);
        let timeout = self.timeout;
        let request = request.map(|body| {
            if exempt {
                tonic::body::Body::new(body.map_err(Into::into))
            } else {
                tonic::body::Body::new(TimedBody {
                    inner: body,
                    deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
                    timeout,
                    ended: false,
                })
            }
        });
        self.inner.call(request)
    }
}

/// A request body that fails once its deadline passes before its end.
struct TimedBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    ended: bool,
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if frame.is_none() {
                this.ended = true;
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if !this.ended && this.deadline.as_mut().poll(cx).is_ready() {
            this.ended = true;
            let status = tonic::Status::deadline_exceeded(format!(
                "the request did not arrive within {} ms",
                this.timeout.as_millis()
            ));
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that yields one frame, then nothing, ever.
    struct Stalled(Option<Bytes>);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_fails_at_the_deadline_with_deadline_exceeded() {
        let mut body = TimedBody {
            inner: Stalled(Some(Bytes::from_static(b"\0\0\0\0\x05hello"))),
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(5))),
            timeout: Duration::from_secs(5),
            ended: false,
        };
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap().len(), 10);
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let status = error.downcast::<tonic::Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_is_passed_through() {
        let inner = http_body_util::Full::new(Bytes::from_static(b"abc"));
        let mut body = TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(Duration::from_millis(1))),
            timeout: Duration::from_millis(1),
            ended: false,
        };
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"abc");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(body.frame().await.is_none());
    }
}
