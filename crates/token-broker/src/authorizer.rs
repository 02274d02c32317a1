//! Who may use which connector, as the request path asks it: through the [`Authorizer`] seam, so
//! the remote registry and the cache in front of it are interchangeable and the broker's core can
//! be tested without a live registry.
//!
//! [`CachedAuthorizer`] keeps the registry's answers, yes and no (an unknown team or connector,
//! no link, a link without the environment), keyed by (team, project, environment, issuer,
//! connector as the caller named it), in a bounded cache whose evicted secrets are zeroized as
//! they drop. It stays exact by following the registry's change feed: each change drops exactly
//! the entries of its team, connector (by id or uid) and project, and a resync drops everything.
//! A fetch that was in flight while any change arrived is answered but not cached (a generation
//! counter tells), so a stale answer cannot slip in behind an invalidation. It fails closed: while
//! the feed is silent (disconnected, or no heartbeat for `max_staleness`), an entry is used only
//! within `max_staleness` of its fetch. The feed follower resumes from the last revision it saw,
//! and a registry that cannot replay from there answers with a resync.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use connect_proto::registry::v1 as pb;
use connect_types::{Environment, IssuerUrl, ProjectId, TeamId};

use crate::{
    auth::Identity,
    error::{BrokerError, Result},
    registry::{Authorization, RegistryClient},
};

/// Answers whether `identity` may use `connector`, with what issuing needs.
#[async_trait]
pub trait Authorizer: Send + Sync + fmt::Debug {
    async fn authorize(
        &self,
        identity: &Identity,
        connector: &str,
        caller_timeout: Option<Duration>,
    ) -> Result<Arc<Authorization>>;
}

#[async_trait]
impl Authorizer for RegistryClient {
    async fn authorize(
        &self,
        identity: &Identity,
        connector: &str,
        caller_timeout: Option<Duration>,
    ) -> Result<Arc<Authorization>> {
        self.ask(identity, connector, caller_timeout)
            .await
            .map(Arc::new)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    owner_id: TeamId,
    project_id: ProjectId,
    environment: Environment,
    issuer: IssuerUrl,
    connector: String,
}

/// A "no" worth remembering: it depends only on what the feed reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Denial {
    IssuerNotTrusted,
    ConnectorNotFound,
    NotLinked,
    NotEnabled,
}

impl Denial {
    fn of(err: &BrokerError) -> Option<Self> {
        match err {
            BrokerError::IssuerNotTrusted(_) => Some(Self::IssuerNotTrusted),
            BrokerError::ConnectorNotFound(_) => Some(Self::ConnectorNotFound),
            BrokerError::ClientNotLinkedToProject { .. } => Some(Self::NotLinked),
            BrokerError::ClientNotEnabledForEnvironment { .. } => Some(Self::NotEnabled),
            _ => None,
        }
    }

    fn error(self, identity: &Identity, connector: &str) -> BrokerError {
        match self {
            Self::IssuerNotTrusted => BrokerError::IssuerNotTrusted(
                "the token's issuer is not the issuer of its team".into(),
            ),
            Self::ConnectorNotFound => BrokerError::ConnectorNotFound(connector.to_owned()),
            Self::NotLinked => BrokerError::ClientNotLinkedToProject {
                connector: connector.to_owned(),
                project_id: identity.project_id.to_string(),
            },
            Self::NotEnabled => BrokerError::ClientNotEnabledForEnvironment {
                connector: connector.to_owned(),
                project_id: identity.project_id.to_string(),
                environment: identity.environment.to_string(),
            },
        }
    }
}

#[derive(Debug)]
struct Cached {
    answer: std::result::Result<Arc<Authorization>, Denial>,
    fetched_at: Instant,
}

/// What the broker knows of the feed.
#[derive(Debug, Default)]
struct FeedState {
    /// Incremented by every change and resync, before its invalidation.
    generation: AtomicU64,
    /// The last revision seen, to resume from.
    revision: AtomicI64,
    last_heard: Mutex<Option<Instant>>,
}

/// The registry's answers, cached and kept exact by its change feed.
pub struct CachedAuthorizer {
    remote: Arc<dyn Authorizer>,
    cache: moka::sync::Cache<CacheKey, Arc<Cached>>,
    feed: FeedState,
    max_staleness: Duration,
}

impl fmt::Debug for CachedAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedAuthorizer")
            .field("entries", &self.cache.entry_count())
            .field("revision", &self.feed.revision.load(Ordering::Relaxed))
            .field("max_staleness", &self.max_staleness)
            .finish_non_exhaustive()
    }
}

impl CachedAuthorizer {
    /// At most `capacity` answers in front of `remote`.
    pub fn new(remote: Arc<dyn Authorizer>, capacity: u64, max_staleness: Duration) -> Self {
        Self {
            remote,
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .support_invalidation_closures()
                .build(),
            feed: FeedState::default(),
            max_staleness,
        }
    }

    /// Whether the feed spoke within `max_staleness`: then every entry is exact.
    fn feed_is_live(&self) -> bool {
        self.feed
            .last_heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < self.max_staleness)
    }

    /// Applies one event of the change feed.
    pub fn apply(&self, event: &pb::ChangeEvent) {
        *self
            .feed
            .last_heard
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        if event.resync {
            self.feed.generation.fetch_add(1, Ordering::SeqCst);
            self.cache.invalidate_all();
        } else if !event.action.is_empty() {
            self.feed.generation.fetch_add(1, Ordering::SeqCst);
            let (owner, id, uid, project) = (
                event.owner_id.clone(),
                event.connector_id.clone(),
                event.connector_uid.clone(),
                event.project_id.clone(),
            );
            let invalidated = self.cache.invalidate_entries_if(move |key, _| {
                key.owner_id.as_str() == owner
                    && (id.is_empty() || key.connector == id || key.connector == uid)
                    && (project.is_empty() || key.project_id.as_str() == project)
            });
            if let Err(e) = invalidated {
                // Cannot happen (closures are enabled); drop everything rather than risk it.
                tracing::error!(error = %e, "precise invalidation failed; dropping every cached answer");
                self.cache.invalidate_all();
            }
        }
        self.feed
            .revision
            .fetch_max(event.revision, Ordering::SeqCst);
    }

    /// Follows `registry`'s change feed until the task is aborted, reconnecting after failures
    /// and resuming from the last revision seen.
    pub fn spawn_follower(
        self: Arc<Self>,
        registry: RegistryClient,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // A live feed sends a heartbeat every second; three missed ones mean it is gone.
            let silence = Duration::from_secs(3);
            let mut backoff = Duration::from_millis(100);
            loop {
                let from = self.feed.revision.load(Ordering::SeqCst);
                match registry.watch_changes(from).await {
                    Ok(mut stream) => loop {
                        match tokio::time::timeout(silence, stream.message()).await {
                            Ok(Ok(Some(event))) => {
                                self.apply(&event);
                                backoff = Duration::from_millis(100);
                            }
                            Ok(Ok(None)) => break,
                            Ok(Err(status)) => {
                                tracing::warn!(code = ?status.code(), "change feed ended");
                                break;
                            }
                            Err(_) => {
                                tracing::warn!("change feed silent; reconnecting");
                                break;
                            }
                        }
                    },
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), "cannot follow the change feed");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        })
    }
}

#[async_trait]
impl Authorizer for CachedAuthorizer {
    async fn authorize(
        &self,
        identity: &Identity,
        connector: &str,
        caller_timeout: Option<Duration>,
    ) -> Result<Arc<Authorization>> {
        let key = CacheKey {
            owner_id: identity.owner_id.clone(),
            project_id: identity.project_id.clone(),
            environment: identity.environment,
            issuer: identity.issuer.clone(),
            connector: connector.to_owned(),
        };
        if let Some(cached) = self.cache.get(&key)
            && (self.feed_is_live() || cached.fetched_at.elapsed() < self.max_staleness)
        {
            return cached
                .answer
                .clone()
                .map_err(|denial| denial.error(identity, connector));
        }
        let generation = self.feed.generation.load(Ordering::SeqCst);
        let fetched_at = Instant::now();
        let answer = self
            .remote
            .authorize(identity, connector, caller_timeout)
            .await;
        let cacheable = match &answer {
            Ok(authorization) => Some(Ok(authorization.clone())),
            Err(e) => Denial::of(e).map(Err),
        };
        if let Some(answer) = cacheable
            && self.feed.generation.load(Ordering::SeqCst) == generation
        {
            self.cache
                .insert(key, Arc::new(Cached { answer, fetched_at }));
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::atomic::AtomicUsize};

    use super::*;

    /// A registry stand-in: answers as told, counts the questions, and can hold one in flight.
    #[derive(Debug, Default)]
    struct Remote {
        calls: AtomicUsize,
        deny: Mutex<Option<Denial>>,
        unavailable: std::sync::atomic::AtomicBool,
        hold: tokio::sync::Mutex<()>,
    }

    #[async_trait]
    impl Authorizer for Remote {
        async fn authorize(
            &self,
            identity: &Identity,
            connector: &str,
            _: Option<Duration>,
        ) -> Result<Arc<Authorization>> {
            let _held = self.hold.lock().await;
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.unavailable.load(Ordering::SeqCst) {
                return Err(BrokerError::RegistryUnavailable("down".into()));
            }
            if let Some(denial) = *self.deny.lock().unwrap() {
                return Err(denial.error(identity, connector));
            }
            Ok(Arc::new(Authorization {
                connector_id: "conn_1".into(),
                connector_uid: "api-key/x".into(),
                connector_type: "api-key".into(),
                config: BTreeMap::new(),
                secrets: BTreeMap::new(),
            }))
        }
    }

    fn identity(project: &str) -> Identity {
        Identity {
            issuer: IssuerUrl::parse("https://issuer.example").unwrap(),
            owner_id: TeamId::parse("team_a").unwrap(),
            project_id: ProjectId::parse(project).unwrap(),
            environment: Environment::Preview,
        }
    }

    fn cache(staleness: Duration) -> (Arc<Remote>, CachedAuthorizer) {
        let remote = Arc::new(Remote::default());
        let cache = CachedAuthorizer::new(remote.clone(), 1000, staleness);
        (remote, cache)
    }

    fn change(
        revision: i64,
        owner: &str,
        connector: (&str, &str),
        project: &str,
    ) -> pb::ChangeEvent {
        pb::ChangeEvent {
            revision,
            action: "project.detach".into(),
            owner_id: owner.into(),
            connector_id: connector.0.into(),
            connector_uid: connector.1.into(),
            project_id: project.into(),
            resync: false,
        }
    }

    fn heartbeat(revision: i64) -> pb::ChangeEvent {
        pb::ChangeEvent {
            revision,
            ..Default::default()
        }
    }

    async fn ask(
        cache: &CachedAuthorizer,
        project: &str,
        connector: &str,
    ) -> Result<Arc<Authorization>> {
        cache.authorize(&identity(project), connector, None).await
    }

    fn calls(remote: &Remote) -> usize {
        remote.calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn answers_are_reused_until_a_change_in_their_scope() {
        let (remote, cache) = cache(Duration::from_secs(60));
        cache.apply(&heartbeat(1));
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        ask(&cache, "prj_b", "conn_1").await.unwrap();
        assert_eq!(calls(&remote), 2);

        // Changes of another team, connector or project leave both entries.
        cache.apply(&change(2, "team_b", ("conn_1", "api-key/x"), ""));
        cache.apply(&change(3, "team_a", ("conn_2", "api-key/y"), ""));
        cache.apply(&change(4, "team_a", ("conn_1", "api-key/x"), "prj_c"));
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        ask(&cache, "prj_b", "conn_1").await.unwrap();
        assert_eq!(calls(&remote), 2);

        // A change of the link drops that project's entry, whichever way the connector was named.
        cache.apply(&change(5, "team_a", ("conn_1", "api-key/x"), "prj_a"));
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        ask(&cache, "prj_b", "conn_1").await.unwrap();
        assert_eq!(calls(&remote), 3);
        // A connector-wide change drops it under its id and under its uid.
        cache.apply(&change(6, "team_a", ("conn_1", "api-key/x"), ""));
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        ask(&cache, "prj_b", "conn_1").await.unwrap();
        assert_eq!(calls(&remote), 5);
        // A team-wide change and a resync drop everything of theirs.
        cache.apply(&change(7, "team_a", ("", ""), ""));
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert_eq!(calls(&remote), 6);
        cache.apply(&pb::ChangeEvent {
            revision: 8,
            resync: true,
            ..Default::default()
        });
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert_eq!(calls(&remote), 7);
        assert_eq!(cache.feed.revision.load(Ordering::SeqCst), 8);
    }

    #[tokio::test]
    async fn denials_are_cached_and_answered_as_the_registry_would() {
        let (remote, cache) = cache(Duration::from_secs(60));
        cache.apply(&heartbeat(1));
        *remote.deny.lock().unwrap() = Some(Denial::NotEnabled);
        for _ in 0..2 {
            assert!(matches!(
                ask(&cache, "prj_a", "api-key/x").await,
                Err(BrokerError::ClientNotEnabledForEnvironment { .. })
            ));
        }
        assert_eq!(calls(&remote), 1);
        // Unavailability is never cached.
        *remote.deny.lock().unwrap() = None;
        remote.unavailable.store(true, Ordering::SeqCst);
        for _ in 0..2 {
            assert!(matches!(
                ask(&cache, "prj_b", "api-key/x").await,
                Err(BrokerError::RegistryUnavailable(_))
            ));
        }
        assert_eq!(calls(&remote), 3);
    }

    #[tokio::test]
    async fn an_answer_fetched_while_a_change_arrived_is_not_cached() {
        let (remote, cache) = cache(Duration::from_secs(60));
        let cache = Arc::new(cache);
        cache.apply(&heartbeat(1));
        let held = remote.hold.lock().await;
        let in_flight = tokio::spawn({
            let cache = cache.clone();
            async move { ask(&cache, "prj_a", "api-key/x").await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        cache.apply(&change(2, "team_a", ("conn_1", "api-key/x"), "prj_a"));
        drop(held);
        in_flight.await.unwrap().unwrap();
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert_eq!(
            calls(&remote),
            2,
            "the answer fetched across the change was cached"
        );
    }

    #[tokio::test]
    async fn a_silent_feed_stops_old_answers_but_a_live_one_keeps_them() {
        let (remote, cache) = cache(Duration::from_millis(100));
        // Never connected: an answer is used only while it is fresh.
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert_eq!(calls(&remote), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert_eq!(calls(&remote), 2);
        // A live feed vouches for older entries.
        tokio::time::sleep(Duration::from_millis(150)).await;
        cache.apply(&heartbeat(1));
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert_eq!(calls(&remote), 2);
        // Once it falls silent, they go to the registry again.
        tokio::time::sleep(Duration::from_millis(150)).await;
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert_eq!(calls(&remote), 3);
    }
}
