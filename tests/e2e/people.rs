//! The development issuer signs people in for `connect login`: its sign-in page, a code bound to
//! PKCE S256 and a loopback redirect, the exchange for an ID token with `email` and `groups`, a
//! refresh; and the registry takes that ID token as a person, with the role their group's binding
//! gives them.

use std::{net::SocketAddr, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use connect_proto::registry::v1::{self as rpb, link_registry_client::LinkRegistryClient};
use connect_runtime::BearerAuth;
use dev_issuer::{DevIssuer, DevPerson};
use link_registry::{
    ServeConfig,
    config::OperatorSettings,
    domain::{
        model::{BindingSubject, Role},
        service::{NewRoleBinding, NewTeam},
        types::{IssuerUrl, TeamId, TeamSlug},
    },
};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_issuer_signs_a_person_in_and_the_registry_gives_them_their_role() {
    let issuer = DevIssuer::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    issuer.add_person(DevPerson {
        subject: "ada".into(),
        email: "ada@demo.example".into(),
        groups: vec!["demo-admins".into()],
    });
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::local(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("r.db").display()
    ));
    config.operators = Some(OperatorSettings {
        issuers: vec![issuer.issuer_url()],
        audiences: vec!["connect-cli".into()],
        leeway: Duration::from_secs(30),
        policy: connect_types::UrlPolicy::loopback(),
        fetch_timeout: Duration::from_secs(3),
    });
    let trusted = vec![issuer.issuer_url()];
    let stack = connect_dev::LocalStack::start(config, |url, key| {
        token_broker::BrokerConfig::local(url, key, trusted, "https://vercel.com/demo".into())
    })
    .await
    .unwrap();
    let team = TeamId::parse("team_demo").unwrap();
    stack
        .registry()
        .create_team(NewTeam {
            id: team.clone(),
            slug: TeamSlug::parse("demo").unwrap(),
            issuer: IssuerUrl::parse(issuer.issuer()).unwrap(),
        })
        .await
        .unwrap();
    stack
        .registry()
        .create_role_binding_as_operator(
            &team,
            NewRoleBinding {
                team: None,
                issuer: IssuerUrl::parse(issuer.issuer()).unwrap(),
                who: BindingSubject::Group("demo-admins".into()),
                role: Role::Admin,
            },
        )
        .await
        .unwrap();

    // The browser's part: the sign-in page, then the choice of person.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = "v".repeat(50);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect = "http://127.0.0.1:9/callback";
    let discovery: Value = serde_json::from_str(
        &browser
            .get(format!(
                "{}/.well-known/openid-configuration",
                issuer.issuer()
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let authorize = discovery["authorization_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_endpoint = discovery["token_endpoint"].as_str().unwrap().to_owned();
    let page = browser
        .get(&authorize)
        .query(&[
            ("response_type", "code"),
            ("client_id", "connect-cli"),
            ("redirect_uri", redirect),
            ("state", "st-1"),
            ("nonce", "n-1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign in as ada@demo.example"), "{page}");
    // Not a loopback redirect: refused.
    let refused = browser
        .get(&authorize)
        .query(&[
            ("response_type", "code"),
            ("client_id", "connect-cli"),
            ("redirect_uri", "https://evil.example/cb"),
            ("state", "st-1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let back = browser
        .post(&authorize)
        .form(&[
            ("client_id", "connect-cli"),
            ("redirect_uri", redirect),
            ("state", "st-1"),
            ("code_challenge", challenge.as_str()),
            ("nonce", "n-1"),
            ("subject", "ada"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(back.status().as_u16(), 303);
    let location = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let query: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "st-1");

    // The client's part: a wrong verifier is refused, the right one gets the ID token.
    let exchange = |verifier: String, code: String| {
        let (browser, token_endpoint) = (browser.clone(), token_endpoint.clone());
        async move {
            browser
                .post(&token_endpoint)
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("code_verifier", verifier.as_str()),
                    ("redirect_uri", redirect),
                    ("client_id", "connect-cli"),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let wrong = exchange("w".repeat(50), query["code"].clone()).await;
    assert_eq!(wrong.status().as_u16(), 400);
    // The code was spent by the refused try: a new sign-in.
    let back = browser
        .post(&authorize)
        .form(&[
            ("client_id", "connect-cli"),
            ("redirect_uri", redirect),
            ("state", "st-2"),
            ("code_challenge", challenge.as_str()),
            ("nonce", "n-2"),
            ("subject", "ada"),
        ])
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: Value =
        serde_json::from_str(&exchange(verifier.clone(), code).await.text().await.unwrap())
            .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            &claims["email"],
            &claims["groups"][0],
            &claims["nonce"],
            &claims["aud"]
        ),
        (
            &Value::from("ada@demo.example"),
            &Value::from("demo-admins"),
            &Value::from("n-2"),
            &Value::from("connect-cli")
        )
    );

    // The registry takes her ID token: admin of the demo team through her group.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", stack.registry_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut as_ada =
        LinkRegistryClient::with_interceptor(channel.clone(), BearerAuth::new(&id_token).unwrap());
    let who = as_ada
        .who_am_i(rpb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.actor, "user:ada@demo.example");
    assert_eq!(
        (who.teams[0].team_id.as_str(), who.teams[0].role.as_str()),
        ("team_demo", "admin")
    );
    as_ada
        .create_project(rpb::CreateProjectRequest {
            id: "prj_ada".into(),
            name: "ada".into(),
        })
        .await
        .unwrap();

    // A refresh gives a new ID token; the refresh token is spent.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let refreshed = browser
        .post(&token_endpoint)
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status().as_u16(), 200);
    let again = browser
        .post(&token_endpoint)
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 400, "a refresh token is used once");
    stack.stop().await.unwrap();
    issuer.stop().await;
}
