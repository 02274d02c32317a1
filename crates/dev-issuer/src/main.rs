//! `dev-issuer`: serves the development OIDC issuer until SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use clap::Parser;

/// A development OIDC issuer: discovery, JWKS, and `GET /token?owner=…&owner_id=…&project=…&project_id=…&environment=…&audience=…`
/// minting Vercel-shaped deployment tokens. For development only.
#[derive(Debug, Parser)]
#[command(name = "dev-issuer", version)]
struct Cli {
    /// Address to serve HTTP on.
    #[arg(long, env = "DEV_ISSUER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The issuer URL (the tokens' `iss`), when clients reach the listener at another address
    /// than the one it is bound to. Defaults to `http://<listen address>`.
    #[arg(long, env = "DEV_ISSUER_URL")]
    issuer_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    connect_runtime::init_logging(connect_runtime::LogFormat::Text);
    let cli = Cli::parse();
    let issuer = dev_issuer::DevIssuer::start_as(cli.listen, cli.issuer_url).await?;
    tracing::info!(issuer = issuer.issuer(), "dev issuer serving");
    connect_runtime::shutdown_signal().await;
    issuer.stop().await;
    Ok(())
}
