//! `omemo-bot`: an OMEMO echo bot and command-line tool for XMPP.
//!
//! Until the bot itself lands this binary only reports its version.

fn main() {
    println!(
        "omemo-bot {} (omemo {})",
        env!("CARGO_PKG_VERSION"),
        omemo::VERSION
    );
}
