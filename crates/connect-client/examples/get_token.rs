//! `cargo run -p connect-client --example get_token -- <connector>`: one token through the client
//! library, configured by the environment as a service would be (`CONNECT_BROKER_URL`,
//! `CONNECT_OIDC_TOKEN`, …). Against `cargo run -p connect-dev`, use the development token it
//! prints and `api-key/demo`.

use connect_client::{ConnectClient, TokenParams};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), connect_client::Error> {
    let connector = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "api-key/demo".into());
    let connect = ConnectClient::from_env()?;
    let token = connect
        .get_token(&connector, &TokenParams::default())
        .await?;
    println!(
        "{} ({}): token {}, expires {:?}",
        token.connector_uid, token.connector_type, token.token_id, token.expires_at
    );
    // A second call within the token's life is answered from the cache.
    let again = connect
        .get_token(&connector, &TokenParams::default())
        .await?;
    assert_eq!(again.token_id, token.token_id);
    Ok(())
}
