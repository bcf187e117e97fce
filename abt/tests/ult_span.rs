//! The `abt.ult` span around each switch into a ULT, alone in its test binary. tracing caches
//! a callsite's interest process-wide, and while one dispatcher is registered (this test's)
//! tracing-core 0.1 computes a new callsite's interest from the registering thread's default
//! dispatcher: a ULT of another test, on a thread with no subscriber, hitting `abt.ult` first
//! (this test's subscriber has raised the max level) would cache it as never, and this test
//! would see no span.

use abt::{pool, Access, PoolKind, Primary, Sched, SchedConfig, SchedKind, Thread};
use std::sync::Arc;

/// Each switch into a ULT runs inside an `abt.ult` span, also for a subscriber that enables
/// spans by name only (it refuses every other callsite, such as an `enabled!` probe's).
#[test]
fn ult_runs_inside_an_abt_ult_span_for_a_name_filtering_subscriber() {
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
    use tracing_subscriber::{filter::filter_fn, registry};

    struct Names(Arc<std::sync::Mutex<Vec<String>>>);
    impl<S: tracing::Subscriber> Layer<S> for Names {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _id: &tracing::span::Id,
            _ctx: Context<'_, S>,
        ) {
            let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
            v.push(attrs.metadata().name().to_string());
        }
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sub = registry()
        .with(Names(seen.clone()).with_filter(filter_fn(|m| m.is_span() && m.name() == "abt.ult")));
    tracing::subscriber::with_default(sub, || {
        let p = pool::create_basic(PoolKind::Fifo, Access::Priv);
        let mut prim = Primary::new(
            Sched::create_basic(SchedKind::Basic, vec![p.clone()], SchedConfig::new()).unwrap(),
        )
        .unwrap();
        let t = Thread::create(&p, || {
            abt::yield_now().unwrap();
        });
        prim.join();
        t.join().unwrap();
    });
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(
        seen.iter().filter(|n| *n == "abt.ult").count(),
        2,
        "one span per switch into the ULT (start, after the yield): {seen:?}"
    );
}
