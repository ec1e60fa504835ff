//! The AFL++ harness: `omemo-fuzz TARGET` fuzzes one target of [`omemo_fuzz::TARGETS`]
//! (see `scripts/fuzz`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = omemo_fuzz::target(&name) else {
        eprintln!(
            "usage: omemo-fuzz TARGET, one of: {}",
            omemo_fuzz::names().join(", ")
        );
        return ExitCode::FAILURE;
    };
    afl::fuzz!(|data: &[u8]| target(data));
    ExitCode::SUCCESS
}
