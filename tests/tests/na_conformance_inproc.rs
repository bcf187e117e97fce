//! The NA conformance suite on the inproc plugin, one test per case.

use na::testing::{self, InprocFixture};

macro_rules! cases {
    (; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                testing::$name(&InprocFixture::new());
            }
        )*
    };
}

na::conformance_cases!(cases);

/// The whole suite on one fixture (one fabric shared by every case), as a third plugin would run it.
#[test]
fn run_all_on_one_fabric() {
    testing::run_all(&InprocFixture::new());
}

/// The peer binary serves inproc too (its own process, so only its start-up is checked here).
#[test]
fn na_peer_prints_its_address_first() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_na_peer"))
        .arg("inproc")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn na_peer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.trim().starts_with("inproc://"), "{line:?}");
}
