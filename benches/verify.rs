//! `cargo bench --bench verify`: the cost of one signature check of a deployment token, RS256 and
//! ES256, through the broker's prepared keys (what a call pays when its token is not cached).

use std::{net::SocketAddr, time::Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use dev_issuer::{Alg, Deployment, DevIssuer};
use openidconnect::{JsonWebKey, core::CoreJwsSigningAlgorithm};
use token_broker::auth::keys::PreparedKey;

const ROUNDS: u32 = 2_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let issuer = DevIssuer::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let keys: Vec<PreparedKey> = issuer.jwks()["keys"]
        .as_array()
        .expect("a JWKS")
        .iter()
        .map(|k| PreparedKey::from_jwk(k.clone()).map_err(anyhow::Error::msg))
        .collect::<Result<_, _>>()?;
    let deployment = Deployment {
        owner: "bench".into(),
        owner_id: "team_bench".into(),
        project: "bench".into(),
        project_id: "prj_bench".into(),
        environment: "production".into(),
        audience: "https://vercel.com/bench".into(),
    };
    println!("{ROUNDS} signature checks each\n");
    println!("{:<8} {:>14} {:>12}", "alg", "per check", "checks/s");
    for (alg, name, jws_alg) in [
        (
            Alg::RS256,
            "RS256",
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        ),
        (
            Alg::ES256,
            "ES256",
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        ),
    ] {
        let token = issuer.mint(&deployment, std::time::Duration::from_secs(600), alg);
        let (message, signature) = token.rsplit_once('.').expect("a compact JWS");
        let signature = URL_SAFE_NO_PAD.decode(signature)?;
        let kid = issuer.kid(alg);
        let key = keys
            .iter()
            .find(|k| k.kid() == Some(kid.as_str()))
            .expect("the signing key");
        key.verify_signature(&jws_alg, message.as_bytes(), &signature)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let start = Instant::now();
        for _ in 0..ROUNDS {
            key.verify_signature(&jws_alg, message.as_bytes(), &signature)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let per = start.elapsed() / ROUNDS;
        println!("{name:<8} {:>14?} {:>12.0}", per, 1.0 / per.as_secs_f64());
    }
    issuer.stop().await;
    Ok(())
}
