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
    connect_runtime::init_logging(cli.log_format);
    let Command::Serve(args) = cli.command;
    let result = async {
        let app = App::build(BrokerConfig::from(args)).await?;
        app.run_until(connect_runtime::shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", connect_runtime::ErrorChain(&e));
            ExitCode::FAILURE
        }
    }
}
