//! TLS and mTLS between every part: callers reach the broker over TLS, the broker reaches an mTLS
//! registry with its client certificate, and every misconfiguration fails closed.

use std::path::{Path, PathBuf};

use connect_runtime::tls::{ClientTls, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tonic::{Code, transport::ClientTlsConfig};

use crate::harness::{Stack, StackOptions, assert_denied, channel};

/// A test CA and certificates signed by it, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA named `name`, a server certificate for `localhost` and `127.0.0.1`, and a client
    /// certificate.
    fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for (who, names) in [
            (
                "server",
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ),
            ("client", vec!["token-broker".to_owned()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, who);
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{who}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{who}.key")), key.serialize_pem()).unwrap();
        }
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A server that requires client certificates of this CA when `mtls`.
    fn server(&self, mtls: bool) -> ServerTls {
        ServerTls {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mtls.then(|| self.path("ca.pem")),
        }
    }

    /// A client trusting `ca` (this CA unless given), presenting the client certificate.
    fn client(&self, ca: Option<&Path>, with_certificate: bool) -> ClientTls {
        ClientTls {
            ca: Some(ca.map_or_else(|| self.path("ca.pem"), Path::to_owned)),
            identity: with_certificate.then(|| (self.path("client.pem"), self.path("client.key"))),
        }
    }

    fn client_config(&self) -> ClientTlsConfig {
        self.client(None, true).load().unwrap()
    }
}

/// A stack whose registry requires mTLS and whose broker serves TLS, with the broker's registry
/// client as `registry_client` makes it.
async fn stack(pki: &Pki, registry_client: ClientTls, wait: bool) -> Stack {
    let (registry_tls, broker_tls) = (pki.server(true), pki.server(false));
    Stack::start_with_options(StackOptions {
        registry: Box::new(move |c| c.tls = Some(registry_tls)),
        broker: Box::new(move |c| {
            c.tls = Some(broker_tls);
            c.registry_tls = registry_client;
            c.registry_timeout = std::time::Duration::from_millis(1500);
        }),
        client_tls: Some(pki.client_config()),
        wait_until_serving: wait,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_flow_over_tls_to_an_mtls_registry() {
    let pki = Pki::new("connect");
    let stack = stack(&pki, pki.client(None, true), true).await;
    let token = stack.acme.token("prj_web", "preview");
    let answer = stack.get_token(&token, "api-key/stripe").await.unwrap();
    assert_eq!(answer.token, "sk_acme_stripe");
    // The link still decides, over TLS as in plaintext.
    assert_denied(
        stack
            .get_token(&stack.acme.token("prj_web", "production"), "api-key/stripe")
            .await,
        Code::PermissionDenied,
        "CLIENT_NOT_ENABLED_FOR_ENVIRONMENT",
        "ClientNotEnabledForEnvironmentError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_registry_refuses_a_broker_without_a_client_certificate() {
    let pki = Pki::new("connect");
    let stack = stack(&pki, pki.client(None, false), false).await;
    let token = stack.acme.token("prj_web", "preview");
    assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::Unavailable,
        "REGISTRY_UNAVAILABLE",
        "RegistryUnavailableError",
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_trusting_the_wrong_ca_fails_closed() {
    let pki = Pki::new("connect");
    let stranger = Pki::new("stranger");
    let stack = stack(
        &pki,
        pki.client(Some(&stranger.path("ca.pem")), true),
        false,
    )
    .await;
    let token = stack.acme.token("prj_web", "preview");
    let status = assert_denied(
        stack.get_token(&token, "api-key/stripe").await,
        Code::Unavailable,
        "REGISTRY_UNAVAILABLE",
        "RegistryUnavailableError",
    );
    assert!(!status.message().contains("sk_acme_stripe"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_refuses_plaintext_and_unknown_cas() {
    let pki = Pki::new("connect");
    let stack = stack(&pki, pki.client(None, true), true).await;
    let broker = stack.broker_addr();
    // Plaintext h2c to a TLS port never gets an answer.
    let plaintext = tonic::transport::Channel::from_shared(format!("http://{broker}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(plaintext) = plaintext {
        let mut health = tonic_health::pb::health_client::HealthClient::new(plaintext);
        assert!(
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_err()
        );
    }
    // A client that does not trust the server's CA cannot connect.
    let stranger = Pki::new("stranger");
    let distrustful = tonic::transport::Channel::from_shared(format!("https://{broker}"))
        .unwrap()
        .tls_config(stranger.client_config())
        .unwrap()
        .connect()
        .await;
    assert!(distrustful.is_err());
    // An admin tool without a client certificate cannot reach the mTLS registry.
    let registry = stack.registry_addr();
    let anonymous = tonic::transport::Channel::from_shared(format!("https://{registry}"))
        .unwrap()
        .tls_config(pki.client(None, false).load().unwrap())
        .unwrap()
        .connect()
        .await;
    if let Ok(anonymous) = anonymous {
        let mut health = tonic_health::pb::health_client::HealthClient::new(anonymous);
        assert!(
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_err()
        );
    }
    // With its certificate it can.
    let admin = channel(registry, Some(&pki.client_config())).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(admin);
    assert!(
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_ok()
    );
    stack.stop().await;
}
