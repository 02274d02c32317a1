//! `connect-console serve`: the web console.

use clap::{Parser, Subcommand};
use connect_console::{Console, config::ConsoleArgs};

#[derive(Parser, Debug)]
#[command(name = "connect-console", version, about = "The Connect web console")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serves the console.
    Serve(ConsoleArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    connect_runtime::init_logging(connect_runtime::LogFormat::Text);
    let Command::Serve(args) = Cli::parse().command;
    let console = Console::build(args.into_config()?).await?;
    tracing::info!(addr = %console.local_addr(), "console listening");
    console.run(connect_runtime::shutdown_signal()).await
}
