//! The authorization cache: an [`Authorizer`] in front of another (the registry's adapter), so
//! the request path asks it exactly as it would ask the registry.
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
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};

use super::{Authorization, Authorizer, Change, ChangeKind};
use crate::{
    auth::Identity,
    error::{BrokerError, Result},
    metrics::BrokerMetrics,
};

/// (issuer, team, project, environment) as verified, shared with the verified-token cache, and
/// the connector and installation as the caller named them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    identity: Arc<Identity>,
    connector: Box<str>,
    installation: Box<str>,
}

/// A "no" worth remembering: it depends only on what the feed reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Denial {
    IssuerNotTrusted,
    ConnectorNotFound,
    NotLinked,
    NotEnabled,
    Suspended,
    NoInstallation,
    Expired,
}

impl Denial {
    fn of(err: &BrokerError) -> Option<Self> {
        match err {
            BrokerError::IssuerNotTrusted(_) => Some(Self::IssuerNotTrusted),
            BrokerError::ConnectorNotFound(_) => Some(Self::ConnectorNotFound),
            BrokerError::ClientNotLinkedToProject { .. } => Some(Self::NotLinked),
            BrokerError::ClientNotEnabledForEnvironment { .. } => Some(Self::NotEnabled),
            BrokerError::ConnectorSuspended(_) => Some(Self::Suspended),
            BrokerError::InstallationNotFound { .. } => Some(Self::NoInstallation),
            BrokerError::LinkExpired { .. } => Some(Self::Expired),
            _ => None,
        }
    }

    fn error(self, identity: &Identity, key: &CacheKey) -> BrokerError {
        let connector = &*key.connector;
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
            Self::Suspended => BrokerError::ConnectorSuspended(connector.to_owned()),
            Self::Expired => BrokerError::LinkExpired {
                connector: connector.to_owned(),
                project_id: identity.project_id.to_string(),
            },
            Self::NoInstallation => BrokerError::InstallationNotFound {
                connector: connector.to_owned(),
                installation: match &*key.installation {
                    "" => "(default)".to_owned(),
                    id => id.to_owned(),
                },
            },
        }
    }
}

#[derive(Debug)]
struct Cached {
    answer: std::result::Result<Arc<Authorization>, Denial>,
    fetched_at: Instant,
}

/// The shared copy of `answer` when one says exactly the same; otherwise `answer`, which becomes
/// the shared copy.
fn share(shared: &SharedAnswers, answer: Arc<Authorization>) -> Arc<Authorization> {
    let key = (
        answer.connector_id.clone(),
        answer.installation_id().unwrap_or_default().to_owned(),
    );
    if let Some(copy) = shared.get(&key)
        && copy.same_as(&answer)
    {
        return copy;
    }
    shared.insert(key, answer.clone());
    answer
}

/// One answer per (connector, installation).
type SharedAnswers = Arc<quick_cache::sync::Cache<(String, String), Arc<Authorization>>>;

/// Most connectors whose answer is kept once for all their cached entries.
const MAX_SHARED_ANSWERS: u64 = 10_000;

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
    /// Allowed answers.
    cache: quick_cache::sync::Cache<CacheKey, Arc<Cached>>,
    /// Denials, apart: a caller naming made-up connectors fills this one, and cannot evict the
    /// answers that let deployments in.
    denials: quick_cache::sync::Cache<CacheKey, Arc<Cached>>,
    /// One copy of each connector's current answer, shared by every cached entry that carries
    /// it: all the projects and environments linked to a connector get the same payload.
    shared: SharedAnswers,
    /// The registry questions being asked now: concurrent misses for one key share one question
    /// (asked in the current feed generation), so a change does not send every caller at once.
    in_flight: Mutex<HashMap<CacheKey, Arc<Flight>>>,
    feed: FeedState,
    max_staleness: Duration,
    metrics: BrokerMetrics,
}

type FlightAnswer = std::result::Result<Arc<Authorization>, Arc<BrokerError>>;

/// One registry question and everyone waiting for its answer.
struct Flight {
    generation: u64,
    asked_at: Instant,
    answer: Shared<BoxFuture<'static, FlightAnswer>>,
}

/// A caller waiting on a flight; the last one to leave before it lands takes it off the board.
struct Waiting<'a> {
    flights: &'a Mutex<HashMap<CacheKey, Arc<Flight>>>,
    key: &'a CacheKey,
    flight: Arc<Flight>,
}

impl Waiting<'_> {
    /// Takes the flight off the board if it is still there; whether this caller did.
    fn land(&self) -> bool {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        let here = flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight));
        if here {
            flights.remove(self.key);
        }
        here
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        // The board's reference and ours: nobody else waits, and a cancelled question must not
        // stay on the board.
        if flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            && Arc::strong_count(&self.flight) == 2
        {
            flights.remove(self.key);
        }
    }
}

impl fmt::Debug for CachedAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedAuthorizer")
            .field("entries", &self.cache.len())
            .field("revision", &self.feed.revision.load(Ordering::Relaxed))
            .field("max_staleness", &self.max_staleness)
            .finish_non_exhaustive()
    }
}

impl CachedAuthorizer {
    /// At most `capacity` answers in front of `remote`.
    pub fn new(
        remote: Arc<dyn Authorizer>,
        capacity: u64,
        max_staleness: Duration,
        metrics: BrokerMetrics,
    ) -> Self {
        Self {
            remote,
            cache: crate::cache::bounded(capacity),
            denials: crate::cache::bounded((capacity / 4).max(1)),
            shared: Arc::new(crate::cache::bounded(MAX_SHARED_ANSWERS)),
            in_flight: Mutex::default(),
            feed: FeedState::default(),
            max_staleness,
            metrics,
        }
    }

    /// The flight asking about `key` in the current feed generation: the one under way, or a new
    /// one. A question asked before the last change is never joined. A shared question runs
    /// under the registry client's own deadline, not under the first caller's: a caller in a hurry
    /// must not cut the answer short for the others (each caller still stops at its own deadline).
    fn board(&self, key: &CacheKey) -> Arc<Flight> {
        let generation = self.feed.generation.load(Ordering::SeqCst);
        let mut flights = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(key)
            && flight.generation == generation
        {
            return flight.clone();
        }
        let (remote, identity, connector, installation) = (
            self.remote.clone(),
            key.identity.clone(),
            key.connector.clone(),
            key.installation.clone(),
        );
        let shared = self.shared.clone();
        let answer = async move {
            remote
                .authorize(&identity, &connector, &installation, None)
                .await
                .map(|authorization| share(&shared, authorization))
                .map_err(Arc::new)
        }
        .boxed()
        .shared();
        let flight = Arc::new(Flight {
            generation,
            asked_at: Instant::now(),
            answer,
        });
        flights.insert(key.clone(), flight.clone());
        flight
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
    pub fn apply(&self, change: &Change) {
        *self
            .feed
            .last_heard
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        match &change.kind {
            ChangeKind::Resync => {
                self.feed.generation.fetch_add(1, Ordering::SeqCst);
                self.cache.clear();
                self.denials.clear();
            }
            ChangeKind::Answers {
                owner_id,
                connector,
                project_id,
            } => {
                self.feed.generation.fetch_add(1, Ordering::SeqCst);
                let (owner, connector, project) =
                    (owner_id.clone(), connector.clone(), project_id.clone());
                // One pass over the entries, shard by shard: changes are rare next to calls.
                let stale = move |key: &CacheKey| {
                    key.identity.owner_id.as_str() == owner
                        && connector.as_ref().is_none_or(|(id, uid)| {
                            *key.connector == **id || *key.connector == **uid
                        })
                        && project
                            .as_ref()
                            .is_none_or(|p| key.identity.project_id.as_str() == p)
                };
                self.cache.retain(|key, _| !stale(key));
                self.denials.retain(|key, _| !stale(key));
            }
            // A revocation changes no answer: the issuers' caches act on it.
            ChangeKind::Heartbeat | ChangeKind::Revoked(_) | ChangeKind::Replaced(_) => {}
        }
        self.feed
            .revision
            .fetch_max(change.revision, Ordering::SeqCst);
    }
}

#[async_trait]
impl Authorizer for CachedAuthorizer {
    async fn authorize(
        &self,
        identity: &Arc<Identity>,
        connector: &str,
        installation: &str,
        caller_timeout: Option<Duration>,
    ) -> Result<Arc<Authorization>> {
        let key = CacheKey {
            identity: identity.clone(),
            connector: connector.into(),
            installation: installation.into(),
        };
        let mut cached = self.cache.get(&key);
        // A time-boxed link's yes ends at its expiry, whatever the feed says: no event marks it.
        if cached
            .as_ref()
            .is_some_and(|c| c.answer.as_ref().is_ok_and(|a| a.link_expired()))
        {
            self.cache.remove(&key);
            cached = None;
        }
        if let Some(cached) = cached.or_else(|| self.denials.get(&key))
            && (self.feed_is_live() || cached.fetched_at.elapsed() < self.max_staleness)
        {
            self.metrics.authorization_cache(true);
            return cached
                .answer
                .clone()
                .map_err(|denial| denial.error(identity, &key));
        }
        self.metrics.authorization_cache(false);
        let waiting = Waiting {
            flights: &self.in_flight,
            key: &key,
            flight: self.board(&key),
        };
        // Each caller waits at most until its own deadline; the question goes on for the others.
        let answer = match caller_timeout {
            Some(deadline) => {
                match tokio::time::timeout(deadline, waiting.flight.answer.clone()).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        return Err(BrokerError::RegistryUnavailable(Box::new(
                            crate::error::Cause(
                                "no registry answer before the caller's deadline".into(),
                            ),
                        )));
                    }
                }
            }
            None => waiting.flight.answer.clone().await,
        };
        // The first caller to land caches the answer, unless a change arrived since it was asked.
        if waiting.land() {
            let cacheable = match &answer {
                Ok(authorization) => Some(Ok(authorization.clone())),
                Err(e) => Denial::of(e).map(Err),
            };
            if let Some(cached) = cacheable
                && self.feed.generation.load(Ordering::SeqCst) == waiting.flight.generation
            {
                let into = if cached.is_ok() {
                    &self.cache
                } else {
                    &self.denials
                };
                into.insert(
                    key.clone(),
                    Arc::new(Cached {
                        answer: cached,
                        fetched_at: waiting.flight.asked_at,
                    }),
                );
            }
        }
        answer.map_err(|e| e.duplicate())
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::atomic::AtomicUsize};

    use connect_types::{Environment, IssuerUrl, ProjectId, TeamId};
    use secrecy::{ExposeSecret, SecretString};

    use super::*;

    /// A registry stand-in: answers as told, counts the questions, and can hold one in flight.
    #[derive(Debug, Default)]
    struct Remote {
        calls: AtomicUsize,
        deny: Mutex<Option<Denial>>,
        unavailable: std::sync::atomic::AtomicBool,
        hold: tokio::sync::Mutex<()>,
        api_key: Mutex<String>,
        /// The end and ceilings of the links answered about next.
        link_ends: Mutex<Option<std::time::SystemTime>>,
        ceilings: Mutex<connect_types::Ceilings>,
    }

    #[async_trait]
    impl Authorizer for Remote {
        async fn authorize(
            &self,
            identity: &Arc<Identity>,
            connector: &str,
            installation: &str,
            _: Option<Duration>,
        ) -> Result<Arc<Authorization>> {
            let _held = self.hold.lock().await;
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.unavailable.load(Ordering::SeqCst) {
                return Err(BrokerError::RegistryUnavailable("down".into()));
            }
            if let Some(denial) = *self.deny.lock().unwrap() {
                let key = CacheKey {
                    identity: identity.clone(),
                    connector: connector.into(),
                    installation: installation.into(),
                };
                return Err(denial.error(identity, &key));
            }
            Ok(Arc::new(Authorization {
                connector_id: "conn_1".into(),
                connector_uid: "api-key/x".into(),
                connector_type: "api-key".into(),
                config: BTreeMap::new(),
                secrets: [(
                    "api_key".to_owned(),
                    SecretString::from(self.api_key.lock().unwrap().clone()),
                )]
                .into(),
                installation: None,
                link_expires_at: *self.link_ends.lock().unwrap(),
                ceilings: self.ceilings.lock().unwrap().clone(),
                owner_slug: "acme".into(),
                project_name: String::new(),
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
        let cache =
            CachedAuthorizer::new(remote.clone(), 1000, staleness, BrokerMetrics::unserved());
        (remote, cache)
    }

    /// A change of `owner`'s answers: of one connector (id, uid) or all (""), of one project
    /// or all ("").
    fn change(revision: i64, owner: &str, connector: (&str, &str), project: &str) -> Change {
        Change {
            revision,
            kind: ChangeKind::Answers {
                owner_id: owner.into(),
                connector: (!connector.0.is_empty())
                    .then(|| (connector.0.to_owned(), connector.1.to_owned())),
                project_id: (!project.is_empty()).then(|| project.to_owned()),
            },
        }
    }

    fn heartbeat(revision: i64) -> Change {
        Change {
            revision,
            kind: ChangeKind::Heartbeat,
        }
    }

    async fn ask(
        cache: &CachedAuthorizer,
        project: &str,
        connector: &str,
    ) -> Result<Arc<Authorization>> {
        cache
            .authorize(&Arc::new(identity(project)), connector, "", None)
            .await
    }

    fn calls(remote: &Remote) -> usize {
        remote.calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_projects_link_terms_are_never_lent_to_another_through_a_shared_answer() {
        let (remote, cache) = cache(Duration::from_secs(60));
        cache.apply(&heartbeat(1));
        *remote.api_key.lock().unwrap() = "sk_1".into();
        let permanent = ask(&cache, "prj_a", "api-key/x").await.unwrap();
        // The same connector and secrets, but a link that ends, and one with a ceiling.
        let ends = std::time::SystemTime::now() + Duration::from_secs(3600);
        *remote.link_ends.lock().unwrap() = Some(ends);
        let boxed = ask(&cache, "prj_b", "api-key/x").await.unwrap();
        assert!(!Arc::ptr_eq(&permanent, &boxed));
        assert_eq!(boxed.link_expires_at, Some(ends));
        *remote.link_ends.lock().unwrap() = None;
        remote.ceilings.lock().unwrap().subjects = vec![connect_types::SubjectKind::App];
        let capped = ask(&cache, "prj_c", "api-key/x").await.unwrap();
        assert!(!Arc::ptr_eq(&permanent, &capped));
        assert_eq!(capped.ceilings.subjects, [connect_types::SubjectKind::App]);
        // Each project keeps its own terms.
        assert_eq!(
            ask(&cache, "prj_a", "api-key/x")
                .await
                .unwrap()
                .link_expires_at,
            None
        );
        assert_eq!(
            ask(&cache, "prj_b", "api-key/x")
                .await
                .unwrap()
                .link_expires_at,
            Some(ends)
        );
    }

    #[tokio::test]
    async fn answers_of_one_connector_share_one_copy_until_it_changes() {
        let (remote, cache) = cache(Duration::from_secs(60));
        cache.apply(&heartbeat(1));
        *remote.api_key.lock().unwrap() = "sk_1".into();
        let a = ask(&cache, "prj_a", "api-key/x").await.unwrap();
        let b = ask(&cache, "prj_b", "api-key/x").await.unwrap();
        assert_eq!(calls(&remote), 2);
        assert!(Arc::ptr_eq(&a, &b));
        // A new secret is a new answer, never the old copy.
        *remote.api_key.lock().unwrap() = "sk_2".into();
        cache.apply(&change(2, "team_a", ("conn_1", "api-key/x"), ""));
        let c = ask(&cache, "prj_c", "api-key/x").await.unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.secrets["api_key"].expose_secret(), "sk_2");
        let a = ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert!(Arc::ptr_eq(&a, &c));
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
        // A revocation changes no answer.
        cache.apply(&Change {
            revision: 4,
            kind: ChangeKind::Revoked(crate::registry::RevokeScope {
                owner_id: "team_a".into(),
                connector_id: "conn_1".into(),
                installation_id: None,
                subject: None,
            }),
        });
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
        cache.apply(&Change {
            revision: 8,
            kind: ChangeKind::Resync,
        });
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert_eq!(calls(&remote), 7);
        assert_eq!(cache.feed.revision.load(Ordering::SeqCst), 8);
    }

    #[tokio::test]
    async fn made_up_connector_names_cannot_evict_the_answers_that_let_deployments_in() {
        let (remote, cache) = cache(Duration::from_secs(60));
        cache.apply(&heartbeat(1));
        for n in 0..100 {
            ask(&cache, &format!("prj_{n}"), "api-key/x").await.unwrap();
        }
        assert_eq!(calls(&remote), 100);
        *remote.deny.lock().unwrap() = Some(Denial::ConnectorNotFound);
        // Each made-up name asked again and again, as hot as any real one.
        for n in 0..3_000 {
            for _ in 0..3 {
                let _ = ask(&cache, "prj_0", &format!("api-key/made-up-{n}")).await;
            }
        }
        *remote.deny.lock().unwrap() = None;
        let before = calls(&remote);
        for n in 0..100 {
            ask(&cache, &format!("prj_{n}"), "api-key/x").await.unwrap();
        }
        assert_eq!(
            calls(&remote),
            before,
            "every allowed answer was still cached"
        );
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
    async fn concurrent_misses_share_one_question_but_never_one_asked_before_a_change() {
        let (remote, cache) = cache(Duration::from_secs(60));
        let cache = Arc::new(cache);
        cache.apply(&heartbeat(1));
        let spawn_ask = |cache: &Arc<CachedAuthorizer>| {
            let cache = cache.clone();
            tokio::spawn(async move { ask(&cache, "prj_a", "api-key/x").await.map(|_| ()) })
        };
        let settle = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        let held = remote.hold.lock().await;
        let before: Vec<_> = (0..10).map(|_| spawn_ask(&cache)).collect();
        settle().await;
        cache.apply(&change(2, "team_a", ("conn_1", "api-key/x"), "prj_a"));
        let after: Vec<_> = (0..10).map(|_| spawn_ask(&cache)).collect();
        settle().await;
        drop(held);
        for task in before.into_iter().chain(after) {
            task.await.unwrap().unwrap();
        }
        assert_eq!(calls(&remote), 2, "one question per feed generation");
        // The question asked after the change was cached.
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert_eq!(calls(&remote), 2);
        assert!(cache.in_flight.lock().unwrap().is_empty());

        // Callers that give up leave no question behind.
        cache.apply(&change(3, "team_a", ("conn_1", "api-key/x"), "prj_a"));
        let held = remote.hold.lock().await;
        let gone: Vec<_> = (0..3).map(|_| spawn_ask(&cache)).collect();
        settle().await;
        assert_eq!(cache.in_flight.lock().unwrap().len(), 1);
        for task in &gone {
            task.abort();
        }
        for task in gone {
            assert!(task.await.unwrap_err().is_cancelled());
        }
        assert!(cache.in_flight.lock().unwrap().is_empty());
        drop(held);
    }

    #[tokio::test]
    async fn a_caller_in_a_hurry_does_not_cut_the_answer_short_for_the_others() {
        let (remote, cache) = cache(Duration::from_secs(60));
        let cache = Arc::new(cache);
        cache.apply(&heartbeat(1));
        let held = remote.hold.lock().await;
        let patient = tokio::spawn({
            let cache = cache.clone();
            async move { ask(&cache, "prj_a", "api-key/x").await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        let hurried = cache
            .authorize(
                &Arc::new(identity("prj_a")),
                "api-key/x",
                "",
                Some(Duration::from_millis(20)),
            )
            .await;
        assert!(matches!(hurried, Err(BrokerError::RegistryUnavailable(_))));
        drop(held);
        patient.await.unwrap().unwrap();
        assert_eq!(calls(&remote), 1);
        // The patient caller's answer was cached.
        ask(&cache, "prj_a", "api-key/x").await.unwrap();
        assert_eq!(calls(&remote), 1);
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
