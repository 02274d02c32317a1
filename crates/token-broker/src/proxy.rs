//! The credential-injecting proxy (`--proxy-listen`): a deployment sends its request to
//! `{proxy}/{connector id or url-encoded uid}/{path}?{query}` with its own deployment token, and
//! the broker forwards it to the connector's `proxy_base_url` + `/{path}?{query}` with the
//! provider credential injected. The caller never holds the credential.
//!
//! Authorization is `GetToken`'s own path ([`Broker::get_token`]: verification, the link, the
//! ceilings, the quota, the ledger, the decision log and metrics); its refusals answer as HTTP
//! with the contract's reason in `connect-error-reason` and a JSON body. Bodies stream both ways
//! (nothing is buffered whole); hop-by-hop headers, the caller's `Authorization` and `Cookie` and
//! the `connect-*` headers are not forwarded; redirects are answered, never followed. The
//! credential is kept out of the answer: a response header carrying it is dropped, and every
//! occurrence in the body is masked in place (same length, so `Content-Length` holds); the
//! upstream is asked for an uncompressed answer so a masked body stays a readable one, and an
//! answer compressed all the same is decoded (gzip, deflate, br) before it is masked; one in an
//! encoding the proxy cannot read is refused (502), never passed on unmasked.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use connect_types::Reason;
use secrecy::ExposeSecret;

use crate::{
    auth::jws::MAX_TOKEN_BYTES, error::BrokerError, metrics::BrokerMetrics, outbound::Outbound,
    service::Broker,
};

/// Request headers that choose what `GetToken` asks for.
const INSTALLATION_HEADER: &str = "connect-installation-id";
const SUBJECT_HEADER: &str = "connect-subject";
const SCOPES_HEADER: &str = "connect-scopes";
/// The header naming why the proxy refused.
pub const REASON_HEADER: &str = "connect-error-reason";

/// Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Credentials shorter than this are not masked in bodies: a few bytes would match by chance.
const MIN_MASKED: usize = 8;

/// The proxy's state: the broker whose `GetToken` authorizes, and the client that forwards.
#[derive(Clone, Debug)]
pub struct Proxy {
    broker: Broker,
    /// The destination policy (`proxy_base_url`s and, through its resolver, every address).
    outbound: Outbound,
    upstream: Upstream,
    read_timeout: Duration,
    metrics: BrokerMetrics,
    bases: CheckedBases,
}

/// `hyper-util`'s pooled client (HTTP/1.1, and h2 where TLS offers it), resolving through the
/// destination policy, with TLS by `rustls` and the WebPKI roots, as the provider calls have.
type Upstream = tower_http::decompression::Decompression<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<
            hyper_util::client::legacy::connect::HttpConnector<
                connect_runtime::outbound::PolicyResolver,
            >,
        >,
        Body,
    >,
>;

/// `proxy_base_url`s the destination policy allowed, parsed once (the policy does not change
/// while the broker runs; resolved addresses are still checked at every connection).
#[derive(Clone)]
struct CheckedBases(Arc<quick_cache::sync::Cache<String, reqwest::Url>>);

impl Default for CheckedBases {
    fn default() -> Self {
        Self(Arc::new(quick_cache::sync::Cache::new(1024)))
    }
}

impl std::fmt::Debug for CheckedBases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedBases")
            .field("held", &self.0.len())
            .finish()
    }
}

impl CheckedBases {
    fn check(
        &self,
        outbound: &Outbound,
        base: &str,
    ) -> Result<reqwest::Url, connect_types::UrlRefusal> {
        if let Some(url) = self.0.get(base) {
            return Ok(url);
        }
        let url = outbound.check(base)?;
        self.0.insert(base.to_owned(), url.clone());
        Ok(url)
    }
}

impl Proxy {
    /// A proxy authorizing through `broker` and forwarding through `outbound` (the destination
    /// policy; no redirects; no overall timeout, so long streams are not cut).
    pub fn new(
        broker: Broker,
        outbound: Outbound,
        connect_timeout: Duration,
        read_timeout: Duration,
        metrics: BrokerMetrics,
    ) -> Self {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(
            outbound.resolver(),
        );
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let upstream = tower_http::decompression::Decompression::new(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https),
        );
        Self {
            broker,
            outbound,
            upstream,
            read_timeout,
            metrics,
            bases: CheckedBases::default(),
        }
    }

    /// Every path is a forwarded request.
    pub fn router(self) -> Router {
        Router::new().fallback(forward).with_state(Arc::new(self))
    }
}

/// A refusal as the proxy answers it: the contract's reason in a header and a JSON body.
fn refusal(err: &BrokerError) -> Response {
    let reason = err.reason();
    refused(
        http_status(reason),
        reason,
        crate::grpc::status::public_message(err),
    )
}

/// A refusal's answer: `message` is `{Error}: {why}`.
fn refused(status: StatusCode, reason: Reason, message: String) -> Response {
    let error = message
        .split_once(':')
        .map_or("Error", |(name, _)| name)
        .to_owned();
    (
        status,
        [(REASON_HEADER, reason.as_str())],
        axum::Json(serde_json::json!({
            "error": error,
            "reason": reason.as_str(),
            "message": message,
        })),
    )
        .into_response()
}

/// The upstream failed the proxied request (the provider's API, not the broker's dependencies).
fn bad_gateway(why: &str) -> Response {
    refused(
        StatusCode::BAD_GATEWAY,
        Reason::ProviderUnavailable,
        format!("ProviderUnavailableError: {why}"),
    )
}

/// The HTTP status of a refusal: its gRPC code's.
fn http_status(reason: Reason) -> StatusCode {
    use tonic::Code;
    match Code::from(reason.code() as i32) {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// One header's value as text, if present once.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, BrokerError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BrokerError::invalid(
            name,
            format!("{name} given more than once"),
        ));
    }
    value
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| BrokerError::invalid(name, format!("{name} is not text")))
}

/// The `GetTokenRequest` a proxied request makes: the connector from the path, the rest from
/// the optional `connect-*` headers.
fn token_request(
    connector: String,
    headers: &HeaderMap,
) -> Result<connect_proto::broker::v1::GetTokenRequest, BrokerError> {
    use connect_proto::broker::v1 as pb;
    let subject = match header_text(headers, SUBJECT_HEADER)? {
        None | Some("") | Some("app") => None,
        Some(value) => match value.strip_prefix("user:") {
            Some(id) => Some(pb::Subject {
                kind: Some(pb::subject::Kind::User(pb::UserSubject {
                    id: id.to_owned(),
                })),
            }),
            None => {
                return Err(BrokerError::invalid(
                    SUBJECT_HEADER,
                    "connect-subject is `app` or `user:<id>`",
                ));
            }
        },
    };
    let scopes = header_text(headers, SCOPES_HEADER)?
        .map(|v| {
            v.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(pb::GetTokenRequest {
        connector,
        subject,
        installation_id: header_text(headers, INSTALLATION_HEADER)?
            .unwrap_or_default()
            .to_owned(),
        scopes,
        ..Default::default()
    })
}

/// How the credential goes into the forwarded request (`proxy_auth`).
enum Injection {
    Bearer,
    Header(HeaderName),
    Basic { user: String },
}

impl Injection {
    fn of(config: Option<&String>, basic_user: Option<&String>) -> Result<Self, BrokerError> {
        let value = config.map_or("bearer", |v| v.trim());
        if value.is_empty() || value.eq_ignore_ascii_case("bearer") {
            return Ok(Self::Bearer);
        }
        if value.eq_ignore_ascii_case("basic") {
            return Ok(Self::Basic {
                user: basic_user.cloned().unwrap_or_default(),
            });
        }
        let bad = || {
            BrokerError::FailedPrecondition(format!(
                "the connector's proxy_auth '{}' is not bearer, basic or header:<Name>",
                connect_types::truncate(value, 64)
            ))
        };
        let name = value.strip_prefix("header:").ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        if HOP_BY_HOP.contains(&name.as_str()) || name == header::HOST {
            return Err(bad());
        }
        Ok(Self::Header(name))
    }

    /// The header and value to send, and what must never come back (the token and, for Basic,
    /// its encoded form).
    fn apply(&self, token: &str) -> Result<(HeaderName, HeaderValue, Vec<Vec<u8>>), BrokerError> {
        use base64::Engine;
        let mut needles = vec![token.as_bytes().to_vec()];
        let (name, value) = match self {
            Self::Bearer => (header::AUTHORIZATION, format!("Bearer {token}")),
            Self::Header(name) => (name.clone(), token.to_owned()),
            Self::Basic { user } => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
                needles.push(encoded.as_bytes().to_vec());
                (header::AUTHORIZATION, format!("Basic {encoded}"))
            }
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            BrokerError::NoValidToken("the credential cannot be sent as a header value".into())
        })?;
        value.set_sensitive(true);
        needles.retain(|n| n.len() >= MIN_MASKED);
        Ok((name, value, needles))
    }
}

/// The connector (decoded) and the rest of the path, as sent, from `/{connector}/{rest}`.
fn split_path(path: &str) -> Result<(String, &str), BrokerError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (connector, rest) = path.split_once('/').unwrap_or((path, ""));
    let connector = percent_encoding::percent_decode_str(connector)
        .decode_utf8()
        .map_err(|_| BrokerError::invalid("connector", "the connector in the path is not UTF-8"))?
        .into_owned();
    if connector.is_empty() {
        return Err(BrokerError::invalid(
            "connector",
            "the path starts with the connector: /{connector id or url-encoded uid}/{path}",
        ));
    }
    Ok((connector, rest))
}

/// `base` + `/{rest}?{query}`, which must stay under `base` (same origin, path below its path):
/// `..` segments, plain or encoded, cannot climb out of the connector's API prefix.
fn target_url(
    base: &reqwest::Url,
    rest: &str,
    query: Option<&str>,
) -> Result<reqwest::Url, BrokerError> {
    let prefix = format!("{}/", base.path().trim_end_matches('/'));
    let mut url = base.clone();
    // Only the path and query are parsed (dot segments resolved); scheme, host and port stay
    // the base's.
    url.set_path(&format!("{prefix}{rest}"));
    url.set_query(query);
    if !url.path().starts_with(&prefix) {
        return Err(BrokerError::invalid(
            "path",
            "the path leaves the connector's proxy_base_url (`..` segments cannot climb above it)",
        ));
    }
    Ok(url)
}

/// The headers to forward: the caller's, less hop-by-hop ones (and any `Connection` names),
/// `Host`, its credentials and Connect's own.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let named_by_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    let mut forwarded = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || named_by_connection.iter().any(|c| c == n)
            || n.starts_with("connect-")
            || *name == header::HOST
            || *name == header::AUTHORIZATION
            || *name == header::COOKIE
            || *name == header::ACCEPT_ENCODING
        {
            continue;
        }
        forwarded.append(name.clone(), value.clone());
    }
    // An encoded body could hide the credential from the masking.
    forwarded.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    forwarded
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let outcome = proxy.forward(parts, body).await;
    let (response, connector_type) = match outcome {
        Ok(answer) => answer,
        Err((err, connector_type)) => (refusal(&err), connector_type),
    };
    proxy.metrics.proxy_request(
        connector_type.as_deref().unwrap_or(""),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

type Refused = (BrokerError, Option<String>);

impl Proxy {
    async fn forward(
        &self,
        parts: axum::http::request::Parts,
        body: Body,
    ) -> Result<(Response, Option<String>), Refused> {
        let (connector, rest) = split_path(parts.uri.path()).map_err(|e| (e, None))?;
        let bearer = connect_types::bearer_token(
            parts
                .headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes()),
            MAX_TOKEN_BYTES,
        )
        .map_err(BrokerError::invalid_token);
        let request = token_request(connector, &parts.headers)
            .and_then(crate::service::TokenRequest::try_from);
        let issued = self
            .broker
            .get_token(bearer, request, None)
            .await
            .map_err(|e| (e, None))?;
        let kind = issued.authorization.connector_type.clone();
        let refuse = |e: BrokerError| (e, Some(kind.clone()));
        let authorization = &issued.authorization;
        let row = connect_types::capabilities(&kind);
        if !row.is_some_and(|r| r.proxy) {
            return Err(refuse(BrokerError::FailedPrecondition(format!(
                "{kind} credentials are not a bearer token or header value: ask GetToken for them"
            ))));
        }
        let Some(base) = authorization.setting("proxy_base_url") else {
            return Err(refuse(BrokerError::FailedPrecondition(format!(
                "connector '{}' has no config.proxy_base_url: the proxy does not know where to send its requests",
                authorization.connector_uid
            ))));
        };
        let base = self.bases.check(&self.outbound, base).map_err(|refusal| {
            tracing::warn!(connector = %authorization.connector_uid, %refusal,
                "refusing the connector's proxy_base_url");
            refuse(BrokerError::FailedPrecondition(
                "the connector's proxy_base_url is not an allowed destination".into(),
            ))
        })?;
        let injection = Injection::of(
            authorization.setting("proxy_auth"),
            authorization.setting("proxy_basic_user"),
        )
        .map_err(&refuse)?;
        let (name, value, needles) = injection
            .apply(issued.token.expose_secret())
            .map_err(&refuse)?;

        let target = target_url(&base, rest, parts.uri.query()).map_err(&refuse)?;
        let mut headers = forwarded_headers(&parts.headers);
        headers.insert(name, value);
        let span = tracing::info_span!(
            "proxy.forward",
            otel.kind = "client",
            connector = %authorization.connector_uid,
            method = %parts.method,
            token_id = %issued.token_id,
        );
        let mut request = axum::http::Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.headers_mut() = headers;
        *request.uri_mut() = target
            .as_str()
            .parse()
            .map_err(|e| refuse(BrokerError::internal("the forwarded URL", e)))?;
        let upstream = tracing::Instrument::instrument(
            tokio::time::timeout(
                self.read_timeout,
                tower::ServiceExt::oneshot(self.upstream.clone(), request),
            ),
            span,
        )
        .await;
        let upstream = match upstream {
            Ok(Ok(upstream)) => upstream,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => connect_runtime::ErrorChain(&e).to_string(),
                    _ => format!("no answer within {:?}", self.read_timeout),
                };
                tracing::warn!(connector = %authorization.connector_uid, error = %why,
                    "the proxied request got no answer");
                return Ok((
                    bad_gateway("the connector's proxy_base_url did not answer"),
                    Some(kind),
                ));
            }
        };
        let (mut head, upstream_body) = upstream.into_parts();
        let status = head.status;
        // Still encoded after decoding: an encoding the masking cannot see through. (Its name
        // is the upstream's text, and might be the credential: it is not repeated.)
        if !needles.is_empty()
            && head
                .headers
                .get_all(header::CONTENT_ENCODING)
                .iter()
                .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            tracing::warn!(connector = %authorization.connector_uid,
                "the proxied answer is in an encoding the proxy cannot read: refused");
            return Ok((
                bad_gateway(
                    "the connector's proxy_base_url answered in a Content-Encoding the proxy cannot read (it reads gzip, deflate and br), so it cannot keep the credential out of the answer",
                ),
                Some(kind),
            ));
        }
        // The answer's head as the upstream sent it, less its connection's own headers and any
        // header carrying the credential (copied only when there is one to leave out).
        let dropped = |name: &HeaderName, value: &HeaderValue| {
            HOP_BY_HOP.contains(&name.as_str())
                || needles
                    .iter()
                    .any(|n| memchr::memmem::find(value.as_bytes(), n).is_some())
        };
        if head.headers.iter().any(|(n, v)| dropped(n, v)) {
            let mut kept = HeaderMap::with_capacity(head.headers.len());
            for (name, value) in &head.headers {
                if !dropped(name, value) {
                    kept.append(name.clone(), value.clone());
                }
            }
            head.headers = kept;
        }
        head.version = axum::http::Version::default();
        head.extensions = axum::http::Extensions::new();
        tracing::info!(target: "connect::proxy", connector = %authorization.connector_uid,
            method = %parts.method, status = status.as_u16(), token_id = %issued.token_id,
            "proxied");
        let body = Body::new(Answer::new(upstream_body, &needles, self.read_timeout));
        Ok((Response::from_parts(head, body), Some(kind)))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream's body as the caller gets it, in one [`http_body::Body`] (no stream adapters,
/// no allocation per chunk): every occurrence of a needle overwritten by `*` (bytes at the end of
/// what was read that could begin a needle are held back until the next chunk shows whether it
/// continues), and an error when the upstream sends nothing for `timeout` (one timer, armed only
/// while waiting and re-armed after progress). Trailers are not forwarded.
struct Answer<B> {
    inner: B,
    finders: Vec<memchr::memmem::Finder<'static>>,
    held: BytesMut,
    timeout: Duration,
    /// The pending read's deadline, made at the first wait.
    idle: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Whether `idle` runs from the current wait (false again after every frame).
    armed: bool,
    done: bool,
}

impl<B> Answer<B> {
    fn new(inner: B, needles: &[Vec<u8>], timeout: Duration) -> Self {
        Self {
            inner,
            finders: needles
                .iter()
                .map(|n| memchr::memmem::Finder::new(n).into_owned())
                .collect(),
            held: BytesMut::new(),
            timeout,
            idle: None,
            armed: false,
            done: false,
        }
    }

    /// Whether nothing came for the timeout since the current wait began.
    fn timed_out(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if !self.armed {
            let deadline = tokio::time::Instant::now() + self.timeout;
            match &mut self.idle {
                Some(idle) => idle.as_mut().reset(deadline),
                None => self.idle = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.idle
            .as_mut()
            .is_some_and(|idle| idle.as_mut().poll(cx).is_ready())
    }
}

impl<B> http_body::Body for Answer<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.armed = false;
                    let Ok(chunk) = frame.into_data() else {
                        continue;
                    };
                    if this.finders.is_empty() {
                        return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
                    }
                    this.held.extend_from_slice(&chunk);
                    mask(&mut this.held, &this.finders);
                    let keep = continuing(&this.held, &this.finders);
                    if this.held.len() > keep {
                        let out = this.held.split_to(this.held.len() - keep).freeze();
                        return Poll::Ready(Some(Ok(http_body::Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.held.is_empty() {
                        return Poll::Ready(None);
                    }
                    let out = this.held.split().freeze();
                    return Poll::Ready(Some(Ok(http_body::Frame::data(out))));
                }
                Poll::Pending if this.timed_out(cx) => {
                    this.done = true;
                    let timeout = this.timeout;
                    return Poll::Ready(Some(Err(format!(
                        "the upstream sent nothing for {timeout:?}"
                    )
                    .into())));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.held.is_empty() && self.inner.is_end_stream())
    }

    /// Masking keeps lengths, so the upstream's own hint holds, less what was already sent.
    fn size_hint(&self) -> http_body::SizeHint {
        if self.done {
            return http_body::SizeHint::with_exact(0);
        }
        let inner = self.inner.size_hint();
        let held = self.held.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

/// How many bytes at the end of `buffer` could be the start of a needle that the next chunk
/// completes: the longest suffix that is a proper prefix of one of them. Only those are held
/// back, so a stream (server-sent events, say) is not delayed when its tail cannot be one.
fn continuing(buffer: &[u8], finders: &[memchr::memmem::Finder<'static>]) -> usize {
    finders
        .iter()
        .filter_map(|finder| {
            let needle = finder.needle();
            let longest = needle.len().saturating_sub(1).min(buffer.len());
            (1..=longest)
                .rev()
                .find(|&k| buffer.ends_with(&needle[..k]))
        })
        .max()
        .unwrap_or(0)
}

fn mask(buffer: &mut BytesMut, finders: &[memchr::memmem::Finder<'static>]) {
    for finder in finders {
        let n = finder.needle().len();
        let mut from = 0;
        while let Some(at) = finder.find(&buffer[from..]) {
            let start = from + at;
            buffer[start..start + n].fill(b'*');
            from = start + n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::BodyExt;

    /// The frames the caller gets for an upstream body sent in `chunks`.
    async fn frames(chunks: &[&str], needles: &[&str]) -> Vec<Bytes> {
        let chunks: Vec<_> = chunks
            .iter()
            .map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(c.to_string()))))
            .collect();
        let needles: Vec<Vec<u8>> = needles.iter().map(|n| n.as_bytes().to_vec()).collect();
        let mut answer = Answer::new(
            http_body_util::StreamBody::new(futures::stream::iter(chunks)),
            &needles,
            Duration::from_secs(5),
        );
        let mut out = Vec::new();
        while let Some(frame) = answer.frame().await {
            out.push(frame.unwrap().into_data().unwrap());
        }
        assert!(http_body::Body::is_end_stream(&answer));
        out
    }

    async fn through(chunks: &[&str], needles: &[&str]) -> String {
        String::from_utf8(frames(chunks, needles).await.concat()).unwrap()
    }

    #[tokio::test]
    async fn the_credential_is_masked_wherever_chunks_split_it() {
        let token = "sk_live_0123456789";
        let body = format!("{{\"echo\":\"Bearer {token}\",\"again\":\"{token}\"}}");
        let expected = body.replace(token, &"*".repeat(token.len()));
        for split in 0..body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(
                through(&[a, b], &[token]).await,
                expected,
                "split at {split}"
            );
        }
        let bytes: Vec<String> = body.chars().map(String::from).collect();
        let refs: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(through(&refs, &[token]).await, expected);
        assert_eq!(
            through(&["no secret here"], &[token]).await,
            "no secret here"
        );
        assert_eq!(through(&[], &[token]).await, "");
        // Nothing is held back when the tail cannot begin the credential: each event goes out
        // as it comes.
        let frames = frames(
            &["data: 1\n\n", "data: sk_li", "ve_0123456789 ok\n\n"],
            &[token],
        )
        .await;
        assert_eq!(frames[0], "data: 1\n\n", "the first event is not held back");
        assert_eq!(
            frames[1], "data: ",
            "only what could begin the credential waits"
        );
        assert_eq!(
            frames.concat(),
            format!("data: 1\n\ndata: {} ok\n\n", "*".repeat(token.len())).as_bytes()
        );
    }

    #[tokio::test]
    async fn an_upstream_silent_for_the_read_timeout_ends_the_answer_with_an_error() {
        // A chunk, another after a pause shorter than the timeout (progress re-arms the timer),
        // then silence: the caller gets both chunks, then an error once a whole timeout passes
        // without a byte.
        const TIMEOUT: Duration = Duration::from_secs(1);
        let (sender, receiver) =
            futures::channel::mpsc::unbounded::<Result<http_body::Frame<Bytes>, std::io::Error>>();
        let mut answer = Answer::new(http_body_util::StreamBody::new(receiver), &[], TIMEOUT);
        let chunk = |text: &'static str| Ok(http_body::Frame::data(Bytes::from(text)));
        sender.unbounded_send(chunk("first")).unwrap();
        let first = answer.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        let later = tokio::spawn(async move {
            tokio::time::sleep(TIMEOUT * 2 / 5).await;
            sender.unbounded_send(chunk("second")).unwrap();
            // Kept open and silent from here on.
            tokio::time::sleep(TIMEOUT * 10).await;
            drop(sender);
        });
        let second = answer.frame().await.unwrap().unwrap();
        assert_eq!(second.into_data().unwrap(), "second");
        let after_second = Instant::now();
        let failed = answer.frame().await.unwrap().unwrap_err();
        assert_eq!(failed.to_string(), "the upstream sent nothing for 1s");
        assert!(
            after_second.elapsed() >= TIMEOUT,
            "{:?}",
            after_second.elapsed()
        );
        assert!(answer.frame().await.is_none());
        assert!(http_body::Body::is_end_stream(&answer));
        later.abort();
    }

    #[test]
    fn proxy_auth_names_how_the_credential_goes_in() {
        let token = "tok_0123456789";
        let (name, value, needles) = Injection::of(None, None).unwrap().apply(token).unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer tok_0123456789")
        );
        assert!(value.is_sensitive());
        assert_eq!(needles, [token.as_bytes()]);
        let header = Injection::of(Some(&"header:X-Api-Key".to_owned()), None).unwrap();
        let (name, value, _) = header.apply(token).unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-api-key", token)
        );
        let basic = Injection::of(Some(&"basic".to_owned()), Some(&"AC123".to_owned())).unwrap();
        let (name, value, needles) = basic.apply(token).unwrap();
        assert_eq!(name, header::AUTHORIZATION);
        assert_eq!(
            value.to_str().unwrap(),
            "Basic QUMxMjM6dG9rXzAxMjM0NTY3ODk="
        );
        assert_eq!(needles.len(), 2);
        for bad in [
            "header:",
            "header:Connection",
            "header:Host",
            "digest",
            "header:a b",
        ] {
            assert!(Injection::of(Some(&bad.to_owned()), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_credentials_and_connect_headers_stay_behind() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer deployment-token"),
            ("cookie", "session=1"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("host", "proxy.local"),
            ("connect-scopes", "read"),
            ("accept-encoding", "gzip"),
            ("content-type", "application/json"),
            ("x-request-id", "r1"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let forwarded = forwarded_headers(&headers);
        let mut names: Vec<&str> = forwarded.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept-encoding", "content-type", "x-request-id"]);
        assert_eq!(forwarded[header::ACCEPT_ENCODING], "identity");
    }

    #[test]
    fn a_base_is_checked_once() {
        let outbound =
            Outbound::new(&Default::default(), std::time::Duration::from_secs(1)).unwrap();
        let checked = CheckedBases::default();
        assert!(
            checked
                .check(&outbound, "https://api.example.com/v1")
                .is_ok()
        );
        assert!(
            checked
                .check(&outbound, "https://api.example.com/v1")
                .is_ok()
        );
        assert_eq!(checked.0.len(), 1);
        // The default policy refuses loopback, every time.
        assert!(checked.check(&outbound, "http://127.0.0.1:1").is_err());
        assert!(checked.check(&outbound, "http://127.0.0.1:1").is_err());
    }

    #[test]
    fn the_forwarded_path_stays_under_the_base() {
        let base = reqwest::Url::parse("https://api.example.com/v1/").unwrap();
        let ok = target_url(&base, "charges/ch_1", Some("limit=3")).unwrap();
        assert_eq!(
            ok.as_str(),
            "https://api.example.com/v1/charges/ch_1?limit=3"
        );
        for climbing in ["../admin", "a/../../admin", "%2e%2e/admin", ".%2E/admin"] {
            assert!(target_url(&base, climbing, None).is_err(), "{climbing}");
        }
        // Inside the prefix, `..` is the upstream's business.
        assert_eq!(target_url(&base, "a/../b", None).unwrap().path(), "/v1/b");
        let root = reqwest::Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            target_url(&root, "x/y", None).unwrap().as_str(),
            "http://127.0.0.1:8080/x/y"
        );
        assert!(
            target_url(&root, "@evil.example/x", None)
                .is_ok_and(|u| u.host_str() == Some("127.0.0.1"))
        );
    }

    #[test]
    fn paths_name_the_connector_first() {
        assert_eq!(
            split_path("/api-key%2Fstripe/v1/charges").unwrap(),
            ("api-key/stripe".to_owned(), "v1/charges")
        );
        assert_eq!(
            split_path("/conn_abc").unwrap(),
            ("conn_abc".to_owned(), "")
        );
        assert!(split_path("/").is_err());
        assert!(split_path("//x").is_err());
    }

    #[test]
    fn refusals_map_to_the_contracts_http_statuses() {
        for (reason, status) in [
            (Reason::InvalidToken, 401),
            (Reason::ClientNotLinkedToProject, 403),
            (Reason::ClientNotEnabledForEnvironment, 403),
            (Reason::ConnectorNotFound, 404),
            (Reason::NoValidToken, 412),
            (Reason::QuotaExceeded, 429),
            (Reason::ProviderUnavailable, 503),
            (Reason::InvalidArgument, 400),
        ] {
            assert_eq!(http_status(reason).as_u16(), status, "{reason:?}");
        }
    }
}
