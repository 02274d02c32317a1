//! The broker's own metrics (served with `--metrics-listen`, next to the per-call gRPC ones):
//!
//! - `connect_get_token_total{outcome,reason}`: `outcome` is `allow` or `deny`, `reason` the
//!   contract's `ErrorInfo.reason` (`OK` when allowed);
//! - `connect_get_token_duration_seconds{outcome}`: histogram;
//! - `connect_authorization_cache_total{result}`: `hit` or `miss` (a miss includes an entry too old
//!   to use while the change feed is down);
//! - `connect_jwks_fetches_total{outcome}`: `ok` or `error`, one per discovery + JWKS fetch;
//! - `connect_provider_requests_total{type,outcome}`: one per request to a provider's token
//!   endpoint, by connector type; `ok`, `rejected` (the provider said no) or `unavailable`;
//! - `connect_proxy_requests_total{type,status}`: one per request through the proxy, by connector
//!   type (empty when refused before the connector was known) and HTTP status answered;
//! - `connect_proxy_duration_seconds{type}`: histogram of the time to the answer's headers.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone, Debug)]
pub struct BrokerMetrics {
    get_token: IntCounterVec,
    get_token_duration: HistogramVec,
    cache_hit: IntCounter,
    cache_miss: IntCounter,
    jwks_fetches: IntCounterVec,
    provider_requests: IntCounterVec,
    proxy_requests: IntCounterVec,
    proxy_duration: HistogramVec,
}

/// How a provider request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderOutcome {
    Ok,
    Rejected,
    Unavailable,
}

impl ProviderOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Unavailable => "unavailable",
        }
    }
}

impl BrokerMetrics {
    /// The broker's metrics, registered in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let get_token = IntCounterVec::new(
            Opts::new(
                "connect_get_token_total",
                "GetToken decisions, by outcome and reason",
            ),
            &["outcome", "reason"],
        )?;
        let get_token_duration = HistogramVec::new(
            HistogramOpts::new(
                "connect_get_token_duration_seconds",
                "Time to decide a GetToken call, by outcome",
            )
            .buckets(connect_runtime::metrics::LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new(
                "connect_authorization_cache_total",
                "Authorization cache lookups, by result",
            ),
            &["result"],
        )?;
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "connect_jwks_fetches_total",
                "OIDC discovery and JWKS fetches, by outcome",
            ),
            &["outcome"],
        )?;
        let provider_requests = IntCounterVec::new(
            Opts::new(
                "connect_provider_requests_total",
                "Requests to providers' token endpoints, by connector type and outcome",
            ),
            &["type", "outcome"],
        )?;
        registry.register(Box::new(get_token.clone()))?;
        registry.register(Box::new(get_token_duration.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        registry.register(Box::new(jwks_fetches.clone()))?;
        let proxy_requests = IntCounterVec::new(
            Opts::new(
                "connect_proxy_requests_total",
                "Requests through the credential-injecting proxy, by connector type and HTTP status",
            ),
            &["type", "status"],
        )?;
        let proxy_duration = HistogramVec::new(
            HistogramOpts::new(
                "connect_proxy_duration_seconds",
                "Time from a proxied request to its answer's headers, by connector type",
            )
            .buckets(connect_runtime::metrics::LATENCY_BUCKETS.to_vec()),
            &["type"],
        )?;
        registry.register(Box::new(provider_requests.clone()))?;
        registry.register(Box::new(proxy_requests.clone()))?;
        registry.register(Box::new(proxy_duration.clone()))?;
        Ok(Self {
            get_token,
            get_token_duration,
            cache_hit: cache.with_label_values(&["hit"]),
            cache_miss: cache.with_label_values(&["miss"]),
            jwks_fetches,
            provider_requests,
            proxy_requests,
            proxy_duration,
        })
    }

    /// Metrics that nobody serves (a broker without `--metrics-listen`, unit tests).
    pub fn unserved() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }

    pub fn get_token(&self, allowed: bool, reason: &str, took: Duration) {
        let outcome = if allowed { "allow" } else { "deny" };
        self.get_token.with_label_values(&[outcome, reason]).inc();
        self.get_token_duration
            .with_label_values(&[outcome])
            .observe(took.as_secs_f64());
    }

    pub fn authorization_cache(&self, hit: bool) {
        if hit {
            self.cache_hit.inc();
        } else {
            self.cache_miss.inc();
        }
    }

    pub fn jwks_fetch(&self, ok: bool) {
        self.jwks_fetches
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn proxy_request(&self, connector_type: &str, status: u16, took: Duration) {
        self.proxy_requests
            .with_label_values(&[connector_type, &status.to_string()])
            .inc();
        self.proxy_duration
            .with_label_values(&[connector_type])
            .observe(took.as_secs_f64());
    }

    pub fn provider_request(&self, connector_type: &str, outcome: ProviderOutcome) {
        self.provider_requests
            .with_label_values(&[connector_type, outcome.as_str()])
            .inc();
    }
}
