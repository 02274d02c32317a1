//! `token-broker serve`.

use std::process::ExitCode;

use clap::Parser;
use token_broker::{
    App, BrokerConfig,
    config::{Cli, Command},
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match connect_runtime::telemetry::init(
        cli.log_format,
        cli.otlp_endpoint.as_deref(),
        "token-broker",
    ) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {}", connect_runtime::ErrorChain(&e));
            return ExitCode::FAILURE;
        }
    };
    let Command::Serve(args) = cli.command;
    let result = async {
        let app = App::build(BrokerConfig::from(args)).await?;
        app.run_until(connect_runtime::shutdown_signal()).await
    }
    .await;
    // The spans still queued go out before the process ends.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", connect_runtime::ErrorChain(&e));
            ExitCode::FAILURE
        }
    }
}
