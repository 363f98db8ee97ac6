//! `tandem`: the viewer when run without a command, else the command line.

use clap::Parser;

fn main() {
    let cli = match tandem::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => std::process::exit(tandem::cli::report_usage_error(e)),
    };
    // Only where evictable series are held: the fixed threshold maps every large block, which
    // costs the command line's grounding and decoding for nothing.
    if cli.holds_evictable_series() {
        tandem::study::resident::return_freed_slices_to_the_system();
    }
    // Library warnings (dicom-rs on odd but readable files, wgpu while probing) go to stderr only
    // when asked for: other tools parse our stderr, where `error:` must mean an error.
    let default_filter = if cli.verbose { "warn" } else { "off" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter)).init();
    std::process::exit(tandem::cli::run(cli));
}
