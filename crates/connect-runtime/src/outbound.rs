//! Every HTTP request a service makes (OIDC discovery, JWKS, provider endpoints) goes through an
//! [`Outbound`] client, which applies the outbound-URL policy of `connect-types` twice: to the URL
//! before the request ([`Outbound::check`]), and to every address its host resolves to when the
//! connection is made (the [`GuardedResolver`] below), so a name that resolves to a private or
//! metadata address, or is re-pointed there after the URL was stored, is never reached. Requests
//! never follow redirects and never go through an environment-configured proxy (which would
//! resolve the host itself and bypass the check).

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use connect_types::{UrlPolicy, UrlRefusal};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Resolves host names with the system resolver (or the operator's pinned addresses) and refuses
/// a name when any of its addresses is not an allowed destination.
#[derive(Debug)]
struct GuardedResolver {
    policy: Arc<UrlPolicy>,
    pinned: Arc<HashMap<String, Vec<IpAddr>>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl GuardedResolver {
    /// `host`'s addresses (port 0), every one an allowed destination.
    fn lookup(
        &self,
        host: &str,
    ) -> impl std::future::Future<Output = Result<Vec<std::net::SocketAddr>, BoxError>> + Send + 'static
    {
        let policy = self.policy.clone();
        let pinned = self.pinned.clone();
        let host = host.to_ascii_lowercase();
        async move {
            let addrs: Vec<IpAddr> = match pinned.get(&host) {
                Some(addrs) => addrs.clone(),
                None => tokio::net::lookup_host((host.as_str(), 0))
                    .await?
                    .map(|a| a.ip())
                    .collect(),
            };
            for ip in &addrs {
                policy.check_resolved(&host, *ip)?;
            }
            Ok(addrs
                .into_iter()
                .map(|ip| std::net::SocketAddr::new(ip, 0))
                .collect())
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup(name.as_str());
        Box::pin(async move {
            let addrs: Addrs = Box::new(lookup.await?.into_iter());
            Ok(addrs)
        })
    }
}

/// The same policy-checked resolution for a `hyper-util` client's `HttpConnector` (the proxy's
/// upstream connections).
#[derive(Clone, Debug)]
pub struct PolicyResolver(Arc<GuardedResolver>);

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for PolicyResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let lookup = self.0.lookup(name.as_str());
        Box::pin(async move { Ok(lookup.await?.into_iter()) })
    }
}

/// An HTTP client bound to the outbound-URL policy.
#[derive(Clone, Debug)]
pub struct Outbound {
    http: reqwest::Client,
    policy: Arc<UrlPolicy>,
    resolver: Arc<GuardedResolver>,
}

/// How an [`Outbound`] client is built.
#[derive(Clone, Debug, Default)]
pub struct OutboundSettings {
    pub policy: UrlPolicy,
    /// Host names pinned to addresses instead of asking DNS (the addresses are checked alike).
    pub pinned: HashMap<String, Vec<IpAddr>>,
}

impl Outbound {
    pub fn new(settings: &OutboundSettings, timeout: Duration) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(settings.policy.clone());
        let pinned = settings
            .pinned
            .iter()
            .map(|(host, addrs)| (host.to_ascii_lowercase(), addrs.clone()))
            .collect();
        let resolver = Arc::new(GuardedResolver {
            policy: policy.clone(),
            pinned: Arc::new(pinned),
        });
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(resolver.clone())
            .build()?;
        Ok(Self {
            http,
            policy,
            resolver,
        })
    }

    /// The policy-checked resolver, for clients other than [`Outbound::http`].
    pub fn resolver(&self) -> PolicyResolver {
        PolicyResolver(self.resolver.clone())
    }

    /// The URL, when the policy allows it as a destination (its resolved addresses are checked
    /// again when the request connects).
    pub fn check(&self, url: &str) -> Result<reqwest::Url, UrlRefusal> {
        self.policy.check_url(url)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn resolver(policy: UrlPolicy, pins: &[(&str, &str)]) -> GuardedResolver {
        GuardedResolver {
            policy: Arc::new(policy),
            pinned: Arc::new(
                pins.iter()
                    .map(|(h, a)| (h.to_string(), vec![a.parse().unwrap()]))
                    .collect(),
            ),
        }
    }

    async fn resolve(r: &GuardedResolver, host: &str) -> Result<Vec<IpAddr>, String> {
        match r.resolve(Name::from_str(host).unwrap()).await {
            Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn names_resolving_to_forbidden_addresses_are_refused_before_any_connection() {
        let r = resolver(
            UrlPolicy::strict(),
            &[
                ("private.test", "10.0.0.1"),
                ("metadata.test", "169.254.169.254"),
                ("public.test", "93.184.216.34"),
            ],
        );
        assert!(
            resolve(&r, "private.test")
                .await
                .unwrap_err()
                .contains("10.0.0.1")
        );
        assert!(resolve(&r, "metadata.test").await.is_err());
        assert_eq!(
            resolve(&r, "public.test").await.unwrap(),
            ["93.184.216.34".parse::<IpAddr>().unwrap()]
        );
        // The system resolver's answer is checked alike: localhost is loopback.
        assert!(resolve(&r, "localhost").await.is_err());
        let dev = resolver(UrlPolicy::loopback(), &[]);
        assert!(resolve(&dev, "localhost").await.is_ok());
    }

    #[tokio::test]
    async fn the_hyper_resolver_applies_the_same_policy() {
        use tower::ServiceExt;
        let r = PolicyResolver(Arc::new(resolver(
            UrlPolicy::strict(),
            &[
                ("private.test", "10.0.0.1"),
                ("public.test", "93.184.216.34"),
            ],
        )));
        let name =
            |host: &str| hyper_util::client::legacy::connect::dns::Name::from_str(host).unwrap();
        let refused = r.clone().oneshot(name("private.test")).await.unwrap_err();
        assert!(refused.to_string().contains("10.0.0.1"), "{refused}");
        assert!(r.clone().oneshot(name("localhost")).await.is_err());
        let allowed: Vec<_> = r.oneshot(name("public.test")).await.unwrap().collect();
        assert_eq!(allowed, ["93.184.216.34:0".parse().unwrap()]);
    }
}
