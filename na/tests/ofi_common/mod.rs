//! Helpers shared by the ofi integration tests: class setup with skip-or-fail, completion waits.

#![allow(dead_code)]

use na::{Class, Completion, Context, Error, OpId};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Hang guard only: generous, so a loaded 2-core machine never trips it.
pub const GUARD: Duration = Duration::from_secs(60);

/// Opens `info` (listening), or returns None (skip) when libfabric lacks the provider `info` needs,
/// unless CI=true, where that is a failure.
pub fn class(info: &str) -> Option<Class> {
    class_opt(info, &na::InitOptions::default())
}

/// [`class`] with explicit options.
pub fn class_opt(info: &str, opts: &na::InitOptions) -> Option<Class> {
    match Class::initialize_opt(info, true, opts) {
        Ok(c) => {
            // `ofi+net` is XNET (libfabric 1.17 names it "net"); every other TCP name is rxm.
            let want = if info.starts_with("ofi+net") {
                "net"
            } else {
                "tcp;ofi_rxm"
            };
            assert_eq!(c.protocol(), want, "{info} must land on {want}");
            Some(c)
        }
        Err(e @ (Error::NoDev | Error::ProtoNoSupport)) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("libfabric provider for {info} unavailable under CI=true: {e}");
            }
            eprintln!("skipping: libfabric provider for {info} unavailable ({e})");
            None
        }
        Err(e) => panic!("initialize {info}: {e}"),
    }
}

/// A listening server class and a client class, each with context 0, or None (skip) as [`class`].
pub fn pair(server_info: &str, client_info: &str) -> Option<(Class, Class, Context, Context)> {
    let server = class(server_info)?;
    let client = class(client_info)?;
    let sctx = server.context_create(0).unwrap();
    let cctx = client.context_create(0).unwrap();
    Some((server, client, sctx, cctx))
}

/// Context 0 of `server` and of `client`, and the server context's address as the client
/// looks it up.
pub fn connect(server: &Class, client: &Class) -> (Context, Context, na::Addr) {
    let (sctx, cctx) = (
        server.context_create(0).unwrap(),
        client.context_create(0).unwrap(),
    );
    let saddr = client
        .addr_lookup(&server.addr_to_string(&sctx.self_addr()).unwrap())
        .unwrap();
    (sctx, cctx, saddr)
}

/// Completions drained while waiting for another op, keyed by context address.
static STASH: Mutex<Vec<(usize, Completion)>> = Mutex::new(Vec::new());

/// Progresses `ctx` (and `others`) until `op` completes; returns its completion. Completions of
/// other operations stay available to later calls.
pub fn wait_op(ctx: &Context, others: &[&Context], op: OpId) -> Completion {
    let key = ctx as *const Context as usize;
    let deadline = Instant::now() + GUARD;
    loop {
        {
            let mut st = STASH.lock().unwrap();
            if let Some(i) = st.iter().position(|(k, c)| *k == key && c.op == op) {
                return st.swap_remove(i).1;
            }
        }
        for o in others {
            o.progress(Duration::ZERO).unwrap();
        }
        ctx.progress(Duration::from_millis(1)).unwrap();
        while let Some(c) = ctx.pop() {
            if c.op == op {
                return c;
            }
            STASH.lock().unwrap().push((key, c));
        }
        assert!(Instant::now() < deadline, "op {op:?} did not complete");
    }
}

/// Progresses all contexts until `n` completions were drained from `ctx`.
pub fn wait_n(ctx: &Context, others: &[&Context], n: usize) -> Vec<Completion> {
    let deadline = Instant::now() + GUARD;
    let mut out = Vec::new();
    while out.len() < n {
        for o in others {
            o.progress(Duration::ZERO).unwrap();
        }
        ctx.progress(Duration::from_millis(1)).unwrap();
        ctx.drain_into(&mut out);
        assert!(
            Instant::now() < deadline,
            "only {} of {n} completions",
            out.len()
        );
    }
    out
}
