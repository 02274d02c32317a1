//! Where connector secrets may be sent: the outbound-URL policy at write time, secrets that must
//! come again when a destination moves, and sealed secrets bound to their destination.

use connect_proto::registry::v1 as pb;
use connect_types::UrlPolicy;
use sea_orm::{ConnectionTrait, Database};
use tonic::Code;

use crate::harness::{Client, ISSUER, TestApp, TestDb, assert_error, violated_fields};

crate::on_every_backend!(
    connector_urls_must_be_public_https_destinations,
    the_loopback_flag_allows_loopback_and_nothing_else,
    moving_a_destination_requires_the_secrets_again,
    a_database_edit_cannot_redirect_sealed_secrets,
);

fn oauth(uid: &str, token_url: &str) -> pb::CreateConnectorRequest {
    pb::CreateConnectorRequest {
        uid: uid.into(),
        config: [("token_url".to_owned(), token_url.to_owned())].into(),
        secrets: [
            ("client_id".to_owned(), "cid".to_owned()),
            ("client_secret".to_owned(), "cs_original".to_owned()),
        ]
        .into(),
        ..Default::default()
    }
}

async fn strict(db: TestDb) -> TestApp {
    TestApp::spawn_with(db, |c| c.url_policy = UrlPolicy::strict()).await
}

async fn refused(admin: &mut Client, token_url: &str) {
    let status = assert_error(
        admin.create_connector(oauth("oauth2/x", token_url)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        violated_fields(&status),
        ["config[token_url]"],
        "{token_url}"
    );
}

async fn connector_urls_must_be_public_https_destinations(db: TestDb) {
    let app = strict(db).await;
    let mut admin = app.admin();
    for bad in [
        "http://localhost.x/token",
        "http://127.0.0.1.x/token",
        "http://user@idp.example/token",
        "https://user:pw@idp.example/token",
        "https://10.0.0.1/token",
        "https://192.168.0.7/token",
        "https://[::1]/token",
        "https://127.0.0.1/token",
        "https://localhost/token",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.1.1/token",
        "https://[fd12::1]/token",
        "http://idp.example/token",
        "ftp://idp.example/token",
        "token",
    ] {
        refused(&mut admin, bad).await;
    }
    // Any `*_url` key is a destination; other keys are not checked.
    let status = assert_error(
        admin
            .create_connector(pb::CreateConnectorRequest {
                uid: "github/acme".into(),
                config: [
                    ("app_id".to_owned(), "1".to_owned()),
                    ("api_url".to_owned(), "https://10.1.2.3".to_owned()),
                    ("note".to_owned(), "http://10.1.2.3".to_owned()),
                ]
                .into(),
                secrets: [("private_key".to_owned(), "pem".to_owned())].into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["config[api_url]"]);

    let created = admin
        .create_connector(oauth("oauth2/ok", "https://idp.example.com/oauth/token"))
        .await
        .expect("a public https destination is accepted")
        .into_inner();
    assert_eq!(
        created.config["token_url"],
        "https://idp.example.com/oauth/token"
    );
    // Updates are checked alike.
    let status = assert_error(
        admin
            .update_connector(pb::UpdateConnectorRequest {
                connector: "oauth2/ok".into(),
                config: [(
                    "token_url".to_owned(),
                    "https://169.254.169.254/".to_owned(),
                )]
                .into(),
                secrets: [("client_secret".to_owned(), "cs".to_owned())].into(),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["config".into(), "secrets".into()],
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), ["config[token_url]"]);
}

async fn the_loopback_flag_allows_loopback_and_nothing_else(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.url_policy = UrlPolicy::loopback()).await;
    let mut admin = app.admin();
    admin
        .create_connector(oauth("oauth2/dev", "http://127.0.0.1:8080/token"))
        .await
        .expect("loopback http under --allow-insecure-loopback");
    for bad in [
        "http://localhost.x/token",
        "http://127.0.0.1.x/token",
        "https://10.0.0.1/token",
        "https://169.254.169.254/",
    ] {
        refused(&mut admin, bad).await;
    }
    let internal = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.url_policy = UrlPolicy {
            allow_insecure_loopback: false,
            allowed_hosts: vec!["10.20.0.0/16".parse().unwrap()],
        }
    })
    .await;
    let mut admin = internal.admin();
    admin
        .create_connector(oauth("oauth2/internal", "https://10.20.1.1/token"))
        .await
        .expect("an operator-allowed network");
    refused(&mut admin, "https://10.21.1.1/token").await;
    refused(&mut admin, "http://127.0.0.1:8080/token").await;
}

fn update(
    config: &[(&str, &str)],
    secrets: &[(&str, &str)],
    paths: &[&str],
) -> pb::UpdateConnectorRequest {
    pb::UpdateConnectorRequest {
        connector: "oauth2/idp".into(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        secrets: secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        ..Default::default()
    }
}

async fn linked(db: TestDb) -> TestApp {
    let app = strict(db).await;
    let mut admin = app.admin();
    admin
        .create_project(pb::CreateProjectRequest {
            id: "prj_web".into(),
            name: "web".into(),
        })
        .await
        .unwrap();
    admin
        .create_connector(oauth("oauth2/idp", "https://idp.example.com/token"))
        .await
        .unwrap();
    admin
        .attach_project(pb::AttachProjectRequest {
            connector: "oauth2/idp".into(),
            project: "prj_web".into(),
            environments: vec!["preview".into()],
            expire_time: None,
            ..Default::default()
        })
        .await
        .unwrap();
    app
}

async fn authorize(app: &TestApp) -> Result<tonic::Response<pb::AuthorizeResponse>, tonic::Status> {
    app.broker()
        .authorize(pb::AuthorizeRequest {
            owner_id: "team_acme".into(),
            project_id: "prj_web".into(),
            environment: "preview".into(),
            issuer: ISSUER.into(),
            connector: "oauth2/idp".into(),
            ..Default::default()
        })
        .await
}

async fn moving_a_destination_requires_the_secrets_again(db: TestDb) {
    let app = linked(db).await;
    let mut admin = app.admin();
    let status = assert_error(
        admin
            .update_connector(update(
                &[("token_url", "https://attacker.example/token")],
                &[],
                &["config"],
            ))
            .await,
        Code::FailedPrecondition,
        "SECRETS_REQUIRED",
    );
    assert!(
        status.message().starts_with("SecretsRequiredError"),
        "{status:?}"
    );
    assert!(status.message().contains("token_url"));
    assert!(!status.message().contains("cs_original"));
    // Removing the destination moves it too.
    assert_error(
        admin.update_connector(update(&[], &[], &["config"])).await,
        Code::FailedPrecondition,
        "SECRETS_REQUIRED",
    );
    // Nothing changed.
    let answer = authorize(&app).await.unwrap().into_inner();
    assert_eq!(
        answer.connector.unwrap().config["token_url"],
        "https://idp.example.com/token"
    );
    assert_eq!(answer.secrets["client_secret"], "cs_original");

    // Other config may change alone.
    admin
        .update_connector(update(
            &[
                ("token_url", "https://idp.example.com/token"),
                ("scopes", "read"),
            ],
            &[],
            &["config"],
        ))
        .await
        .expect("no destination moved");
    // A new destination with its secrets is fine, and they are what Authorize answers.
    admin
        .update_connector(update(
            &[("token_url", "https://idp2.example.com/token")],
            &[("client_id", "cid2"), ("client_secret", "cs_new")],
            &["config", "secrets"],
        ))
        .await
        .expect("destination moved with its secrets");
    let answer = authorize(&app).await.unwrap().into_inner();
    assert_eq!(
        answer.connector.unwrap().config["token_url"],
        "https://idp2.example.com/token"
    );
    assert_eq!(answer.secrets["client_secret"], "cs_new");
}

async fn a_database_edit_cannot_redirect_sealed_secrets(db: TestDb) {
    let app = linked(db).await;
    assert_eq!(
        authorize(&app).await.unwrap().into_inner().secrets["client_secret"],
        "cs_original"
    );
    // Someone with write access to the database points the connector elsewhere.
    let raw = Database::connect(&app.db.url).await.unwrap();
    raw.execute_unprepared(
        "UPDATE connectors SET config = '{\"token_url\":\"https://attacker.example/token\"}'",
    )
    .await
    .unwrap();
    raw.close().await.ok();
    let status = assert_error(authorize(&app).await, Code::Internal, "INTERNAL");
    assert!(!status.message().contains("cs_original"));
}

/// Seals `value` as registries did before secrets were bound to their destination: AES-256-GCM
/// under the key file's key, associated data `connect.v1.secret\0team\0connector\0name`, stored as
/// base64 of nonce ‖ ciphertext ‖ tag.
fn legacy_seal(key_file: &std::path::Path, aad: &str, value: &str) -> String {
    use aes_gcm::{
        Aes256Gcm, KeyInit, Nonce,
        aead::{Aead, Payload},
    };
    use base64::{Engine, engine::general_purpose::STANDARD};
    let key = STANDARD
        .decode(std::fs::read_to_string(key_file).unwrap().trim())
        .unwrap();
    let cipher = Aes256Gcm::new_from_slice(&key).unwrap();
    let nonce = [7u8; 12];
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: value.as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    STANDARD.encode([&nonce[..], &sealed].concat())
}

/// The sealed secrets of the one connector in the database, as stored.
async fn stored_secrets(raw: &sea_orm::DatabaseConnection) -> serde_json::Value {
    let row = raw
        .query_one_raw(sea_orm::Statement::from_string(
            raw.get_database_backend(),
            "SELECT secrets FROM connectors",
        ))
        .await
        .unwrap()
        .unwrap();
    serde_json::from_str(&row.try_get::<String>("", "secrets").unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_sealed_before_the_destination_binding_are_resealed_at_start() {
    let app = linked(TestDb::sqlite().await).await;
    let connector = authorize(&app)
        .await
        .unwrap()
        .into_inner()
        .connector
        .unwrap();
    let broker = app.broker.clone();
    let db = app.stop().await;
    // Rewrite the stored secret in the old format, as an older registry left it.
    let key_file = std::path::PathBuf::from(format!(
        "{}.key",
        db.url
            .trim_start_matches("sqlite://")
            .trim_end_matches("?mode=rwc")
    ));
    let aad = format!(
        "connect.v1.secret\0team_acme\0{}\0client_secret",
        connector.id
    );
    let legacy = legacy_seal(&key_file, &aad, "cs_legacy");
    let raw = Database::connect(&db.url).await.unwrap();
    let mut secrets = stored_secrets(&raw).await;
    secrets["client_secret"]["sealed"] = legacy.clone().into();
    raw.execute_unprepared(&format!(
        "UPDATE connectors SET secrets = '{}'",
        secrets.to_string().replace('\'', "''")
    ))
    .await
    .unwrap();
    raw.close().await.ok();

    // The restarted registry opens it and seals it again, bound to its destination.
    let mut app = TestApp::start(db).await;
    app.broker = broker;
    let answer = authorize(&app).await.unwrap().into_inner();
    assert_eq!(answer.secrets["client_secret"], "cs_legacy");
    assert_eq!(answer.secrets["client_id"], "cid");
    let raw = Database::connect(&app.db.url).await.unwrap();
    let stored = stored_secrets(&raw).await;
    assert!(
        !stored.to_string().contains(&legacy),
        "the legacy value is still stored"
    );
    for (name, secret) in stored.as_object().unwrap() {
        let sealed = secret["sealed"].as_str().unwrap();
        assert!(sealed.starts_with("v2:"), "{name} was not re-sealed");
    }
}
