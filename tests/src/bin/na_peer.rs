//! `na_peer <info>`: serves the NA conformance suite's peer protocol on a listening class opened
//! from `info`, printing its address string as stdout's first line; exits on the quit command.

use std::io::Write;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let info = match std::env::args().nth(1) {
        Some(i) => i,
        None => {
            eprintln!("usage: na_peer <info string>   (e.g. ofi+tcp://127.0.0.1)");
            std::process::exit(2);
        }
    };
    let class = match na::Class::initialize(&info, true) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("na_peer: cannot open {info}: {e}");
            std::process::exit(1);
        }
    };
    let mut ready = |addr: &str| {
        let mut out = std::io::stdout().lock();
        // A closed stdout only means nobody listens for the address; keep serving.
        let _ = writeln!(out, "{addr}");
        let _ = out.flush();
    };
    match na::testing::serve_peer(&class, &mut ready, None) {
        Ok(stats) => eprintln!("na_peer: done: {stats:?}"),
        Err(e) => {
            eprintln!("na_peer: {e}");
            std::process::exit(1);
        }
    }
}
