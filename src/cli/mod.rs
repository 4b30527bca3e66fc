//! The command line: clap definitions and dispatch. Each subcommand validates its flags into
//! the finished types (`Limits`, module bytes) once, then calls the library.

mod client;
mod guest;
mod remote;
mod replay;
mod run;
mod serve;
mod store;
mod tls;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use client::{Client, Connection};
pub use guest::GuestArgs;
pub use remote::{
    JobCommand, QueueCommand, ScheduleCommand, ServerCommand, TaskCommand, TokenCommand,
};
pub use replay::ReplayArgs;
pub use run::{RunArgs, exit_code_for};
pub use serve::ServeArgs;
pub use store::StoreCommand;
pub use tls::install_default_provider;
pub use worker::{RunWorker, WorkerArgs, WorkerCommand};

/// Exit code when remotask itself could not do what was asked (bad flags, refused module,
/// unreadable file, host error).
pub const EXIT_FAILURE: u8 = 2;

/// remotask: run untrusted WebAssembly task modules with hard limits.
#[derive(Debug, Parser)]
#[command(name = "remotask", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a task module once, locally, in the sandbox.
    Run(RunArgs),
    /// Run an attempt again from its repro bundle (`remotask job bundle`), locally, and say
    /// whether it reproduced the reason, exit code, output and fuel.
    Replay(ReplayArgs),
    /// Start the engine on an embedded SQLite file in a data directory.
    Serve(ServeArgs),
    /// Run jobs of a server on this machine (`remotask worker list`: the server's workers).
    Worker(WorkerArgs),
    /// Check a module as an upload would and print its admission report.
    Inspect {
        /// The module (.wasm binary).
        module: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upload and manage task modules on a server.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Submit and manage jobs on a server.
    Job {
        #[command(subcommand)]
        command: JobCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// List, pause and resume a server's queues.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Cron and delayed schedules on a server.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// A server's health, metrics and OpenAPI document.
    Server {
        #[command(subcommand)]
        command: ServerCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Work on a store directly: `remotask store copy` moves an installation to PostgreSQL.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Create, list and revoke API tokens (admin).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Parses the process's arguments and runs the command.
pub fn main() -> anyhow::Result<ExitCode> {
    install_default_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Replay(args) => replay::replay(args),
        Command::Serve(args) => serve::serve(args),
        Command::Worker(args) => worker::worker(args),
        Command::Inspect { module, json } => run::inspect(&module, json),
        Command::Task {
            command,
            connection,
        } => remote::task(command, &connection),
        Command::Job {
            command,
            connection,
        } => remote::job(command, &connection),
        Command::Queue {
            command,
            connection,
        } => remote::queue(command, &connection),
        Command::Server {
            command,
            connection,
        } => remote::server(command, &connection),
        Command::Schedule {
            command,
            connection,
        } => remote::schedule(command, &connection),
        Command::Token {
            command,
            connection,
        } => remote::token(command, &connection),
        Command::Store { command } => store::store(command),
    }
}
