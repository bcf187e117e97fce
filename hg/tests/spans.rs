//! One RPC's tracing spans, captured: hg spans per hop, with the NA spans they drive nested inside.

use hg::na::plugins::inproc::{Fabric, FaultConfig};
use hg::{Class, Handle, InitOptions, Rpc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context as LayerCtx, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

hg::rpc! {
    /// Adds one.
    pub rpc Inc(IncIn, IncOut) {
        input {
            /// Value.
            pub v: u64,
        }
        output {
            /// Value + 1.
            pub v: u64,
        }
    }
}

/// A span as captured: name, parent's name, fields.
type Seen = (String, Option<String>, String);

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct FieldText(String);
impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", f.name(), v));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerCtx<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.name().to_string());
        let mut fields = FieldText(String::new());
        attrs.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), parent, fields.0));
    }
}

#[test]
fn one_rpc_is_followed_from_hg_to_na_and_back() {
    follow_one_rpc(true);
}

/// With injection off (`max_inject_size` 0) the request and the reply are posted NA sends.
#[test]
fn without_inject_the_sends_are_na_operations() {
    follow_one_rpc(false);
}

/// One RPC over inproc with NA injection on or off; asserts its hops.
fn follow_one_rpc(inject: bool) {
    let (send_u, send_e) = if inject {
        ("na.inject_unexpected", "na.inject_expected")
    } else {
        ("na.send_unexpected", "na.send_expected")
    };
    let na_opts = hg::na::InitOptions {
        max_inject_size: if inject { 4096 } else { 0 },
        ..hg::na::InitOptions::default()
    };
    let cap = Capture::default();
    let sub = tracing_subscriber::registry()
        .with(cap.clone())
        .with(tracing_subscriber::filter::LevelFilter::TRACE);
    tracing::subscriber::with_default(sub, || {
        let fabric = Fabric::new(FaultConfig::none());
        let opts = InitOptions {
            request_post_init: 2,
            ..InitOptions::default()
        };
        let server = Class::from_na(fabric.class_opt(true, &na_opts), opts.clone());
        let client = Class::from_na(fabric.class_opt(false, &na_opts), opts);
        server.register_rpc::<Inc>(Some(Arc::new(|h: Handle| {
            let i: IncIn = h.get_input()?;
            h.respond(&IncOut { v: i.v + 1 }, |_| {})
        })));
        client.register_rpc::<Inc>(None);
        let sctx = server.context_create().unwrap();
        let cctx = client.context_create().unwrap();
        let done = Arc::new(Mutex::new(None));
        let d = done.clone();
        let h = cctx.create(&sctx.self_addr(), Inc::id()).unwrap();
        h.forward(&IncIn { v: 1 }, move |h, r| {
            *d.lock().unwrap() = Some(r.and_then(|()| h.get_output::<IncOut>()));
        })
        .unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        while done.lock().unwrap().is_none() {
            for c in [&sctx, &cctx] {
                c.progress(Duration::ZERO).unwrap();
                c.trigger(usize::MAX).unwrap();
            }
            assert!(Instant::now() < end);
        }
        assert_eq!(done.lock().unwrap().clone().unwrap().unwrap().v, 2);
    });
    let spans = cap.0.lock().unwrap().clone();
    let id = Inc::id().to_string();
    let has = |name: &str, parent: Option<&str>, field: Option<&str>| {
        spans.iter().any(|(n, p, f)| {
            n == name && p.as_deref() == parent && field.is_none_or(|x| f.contains(x))
        })
    };
    let rpc_field = format!("rpc_id={id}");
    // Origin: forward (with the id) posts the reply's receive and sends the request itself (no
    // progress held the NA context at the time); a small request is injected (no NA operation)
    // when NA injects.
    assert!(has("hg.forward", None, Some(&rpc_field)), "{spans:#?}");
    assert!(
        has("na.recv_expected_post", Some("hg.forward"), None),
        "{spans:#?}"
    );
    assert!(has(send_u, Some("hg.forward"), None), "{spans:#?}");
    // Target: the request decoded inside progress records the id, the handler runs in trigger,
    // and respond sends the reply itself (injected when NA injects).
    assert!(
        has("hg.request", Some("hg.progress"), Some(&rpc_field)),
        "{spans:#?}"
    );
    assert!(
        has("hg.handler", Some("hg.trigger"), Some(&rpc_field)),
        "{spans:#?}"
    );
    assert!(
        has("hg.respond", Some("hg.handler"), Some(&rpc_field)),
        "{spans:#?}"
    );
    assert!(has(send_e, Some("hg.respond"), None), "{spans:#?}");
    let other = if inject {
        "na.send_unexpected"
    } else {
        "na.inject_unexpected"
    };
    assert!(!has(other, Some("hg.forward"), None), "{spans:#?}");
    // Back at the origin: the callback runs in trigger.
    assert!(
        has("hg.forward_cb", Some("hg.trigger"), Some(&rpc_field)),
        "{spans:#?}"
    );
}
