//! `tandem`: the viewer when run without a command, else the command line.

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = tandem::cli::Cli::parse();
    std::process::exit(tandem::cli::run(cli));
}
