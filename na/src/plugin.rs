//! The plugin seam (`na_class_ops`): the traits a transport implements, the table that picks one
//! from an info string (`na_class_table`), and the info-string parser (`NA_Initialize_opt`).

use crate::addr::Addr;
use crate::cq::CompletionQueue;
use crate::error::{Error, Result};
use crate::mem::{Access, MemRegion, PluginMem, RemoteMem, Segment};
use crate::msg::Tag;
use crate::op::{Completion, Op, OpId, OpKind};
use crate::sync::Arc;
use std::os::fd::RawFd;
use std::time::Duration;

/// Class-level operations of a transport: the `na_class_ops` entries that are not per context.
#[doc(alias = "na_class_ops")]
pub trait Plugin: Send + Sync + 'static {
    /// Plugin name as in info strings (`"ofi"`, `"inproc"`).
    fn name(&self) -> &'static str;
    /// The transport actually opened (`"tcp;ofi_rxm"` for ofi over tcp on libfabric 1.17).
    fn protocol(&self) -> &str;
    /// Whether this class accepts unexpected messages from peers it has not contacted (`listen`).
    ///
    /// This and the three message sizes below are read once, when the [`crate::Class`] is made,
    /// and must not change afterwards.
    fn is_listening(&self) -> bool;
    /// `context_create`: a new endpoint whose completions go to `cq`.
    fn context_create(&self, id: u8, cq: Arc<CompletionQueue>) -> Result<Arc<dyn PluginContext>>;
    /// `addr_lookup`: resolves a peer's address string (as `addr_to_string` prints it).
    fn addr_lookup(&self, name: &str) -> Result<Addr>;
    /// `addr_to_string`.
    fn addr_to_string(&self, addr: &Addr) -> Result<String>;
    /// `addr_deserialize`: validates raw bytes from a peer and makes an address of them.
    fn addr_deserialize(&self, bytes: &[u8]) -> Result<Addr>;
    /// `addr_set_remove` (Mercury's `HG_Addr_set_remove`): forget per-peer state (AV entry,
    /// connection) so that the next operation towards `addr` reconnects.
    fn addr_set_remove(&self, addr: &Addr) -> Result<()>;
    /// `msg_get_max_unexpected_size`, header included.
    fn max_unexpected_size(&self) -> usize;
    /// `msg_get_max_expected_size`.
    fn max_expected_size(&self) -> usize;
    /// The largest message [`PluginContext::inject`] may send (0: none; the default).
    fn max_inject_size(&self) -> usize {
        0
    }
    /// `msg_get_unexpected_header_size`: bytes at the front of an unexpected message the plugin
    /// owns (ofi on tcp: the sender's 16-byte `sockaddr_in`).
    fn unexpected_header_size(&self) -> usize;
    /// `msg_get_max_tag`.
    fn max_tag(&self) -> Tag;
    /// `mem_register`: registers segments for RMA; the returned value deregisters on drop.
    fn mem_register(&self, segments: &[Segment], access: Access) -> Result<Box<dyn PluginMem>>;
    /// `mem_register` for plugins that move bytes themselves (inproc): they get the region, not
    /// only its addresses, and may keep a clone. The default registers the segments.
    fn mem_register_region(
        &self,
        region: &Arc<MemRegion>,
        access: Access,
    ) -> Result<Box<dyn PluginMem>> {
        self.mem_register(region.segments(), access)
    }
    /// `mem_handle_deserialize`: validates a peer's serialized handle.
    fn mem_deserialize(&self, bytes: &[u8]) -> Result<RemoteMem>;
}

/// Per-context operations of a transport: one endpoint, its posted operations and its progress.
///
/// Contract (the conformance suite checks it):
/// - every `post`ed operation produces exactly one [`crate::Completion`] in the context's queue —
///   success, error (including argument errors, reported at once), cancel or `close`;
/// - `progress(timeout)` returns at once when completions are waiting or `timeout` is zero, else
///   waits at most `timeout` for one, and returns early when `wake` is called from another thread;
/// - `cancel` completes the operation with `Canceled` only if it had no effect; otherwise the real
///   result arrives; cancelling a completed or unknown operation is a no-op;
/// - `close` completes every pending operation (with `Canceled` when it had no effect).
pub trait PluginContext: Send + Sync {
    /// This endpoint's own address (`addr_self`).
    fn self_addr(&self) -> Addr;
    /// `msg_init_unexpected`: writes the plugin's header at the front of an unexpected message.
    fn msg_init_unexpected(&self, buf: &mut [u8]);
    /// Starts `op`; errors complete it (into the queue) instead of returning.
    fn post(&self, op: Op);
    /// Sends `msg` as a `SendUnexpected` (plugin header included) or `SendExpected` of `kind`
    /// would, but with no operation and no completion: the bytes are copied before this
    /// returns (libfabric's `fi_inject`). `false`: not sent, and nothing happened — too large
    /// for [`Plugin::max_inject_size`], another kind, a peer not yet known to be up, no queue
    /// space, earlier sends waiting that it must not pass; the caller then posts the message
    /// as a normal send, which reports any error. A message that was injected is in the
    /// transport's hands: a failure after this returns is not reported. The default never
    /// injects.
    fn inject(&self, kind: OpKind, msg: &[u8], dest: &Addr, tag: Tag) -> bool {
        let _ = (kind, msg, dest, tag);
        false
    }
    /// `poll` / `poll_wait`: moves transport completions into the queue.
    fn progress(&self, timeout: Duration) -> Result<()>;
    /// As [`PluginContext::progress`], but the completions this call itself finishes may be
    /// appended to `out` instead of going through the queue (what other paths complete, such as
    /// a failed post or a cancel, still goes to the queue). The default runs `progress`, leaving
    /// everything in the queue; a plugin overrides it to spare each completion a trip through
    /// the queue's lock.
    fn progress_into(&self, timeout: Duration, out: &mut Vec<Completion>) -> Result<()> {
        let _ = out;
        self.progress(timeout)
    }
    /// `cancel`.
    fn cancel(&self, op: OpId) -> Result<()>;
    /// Wakes a `progress` blocked on another thread (or makes the next one return at once).
    fn wake(&self);
    /// `poll_get_fd`: a file descriptor that becomes readable when progress has work, if any.
    fn wait_fd(&self) -> Option<RawFd>;
    /// Completes every pending operation exactly once and releases the endpoint.
    fn close(&self);
}

/// `now + timeout` for a progress deadline; a timeout too large for `Instant` (such as
/// `Duration::MAX`, "wait for ever") is capped at a century instead of panicking.
pub(crate) fn deadline_after(timeout: std::time::Duration) -> std::time::Instant {
    const CENTURY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    std::time::Instant::now() + timeout.min(CENTURY)
}

/// Options of `NA_Initialize_opt` (`na_init_info`).
#[doc(alias = "na_init_info")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// Maximum unexpected message size, plugin header included (Mercury's default 4096).
    pub max_unexpected_size: usize,
    /// Maximum expected message size (default 4096).
    pub max_expected_size: usize,
    /// Largest message a context may inject ([`crate::Context::inject_unexpected`]: sent
    /// without an operation or a completion, copied at once). 0 never injects. Default 4096, the
    /// default message sizes. The ofi plugin asks libfabric for it and keeps what the provider
    /// grants (`tcp;ofi_rxm` up to its 16 KiB bounce buffers, else its own 64 bytes).
    pub max_inject_size: usize,
    /// Maximum number of contexts on the class.
    pub max_contexts: u8,
    /// Whether a `progress` with a timeout may sleep in the kernel (`na_init_info::progress_mode`).
    pub progress_mode: ProgressMode,
    /// Who serializes the transport's calls (`na_init_info::thread_mode`).
    pub thread_mode: ThreadMode,
    /// The ofi plugin on TCP (`tcp;ofi_rxm`, XNET): the `SO_RCVBUF` each of its connections
    /// gets, fixed, in place of the kernel's receive-buffer autotuning (libfabric 1.17's tcp
    /// provider has no setting for it). `None` (or `Some(0)`) leaves autotuning on; so does a
    /// value above `net.core.rmem_max`, which the kernel would cut. Default 4 MiB: on loopback
    /// autotuning settles bulk transfers of 64 KiB at two speeds, mostly the slower
    /// (docs/perf.md).
    pub sock_rcvbuf: Option<usize>,
}

impl Default for InitOptions {
    fn default() -> InitOptions {
        InitOptions {
            max_unexpected_size: 4096,
            max_expected_size: 4096,
            max_inject_size: 4096,
            max_contexts: 64,
            progress_mode: ProgressMode::Block,
            thread_mode: ThreadMode::Serialized,
            sock_rcvbuf: Some(4 << 20),
        }
    }
}

/// How `progress` waits for work (`na_init_info::progress_mode`).
#[doc(alias = "na_progress_mode")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A `progress` with a timeout sleeps until a completion, a wake or the deadline; the ofi
    /// plugin asks its completion queues for a wait fd (`FI_WAIT_FD`) to do so. The default.
    #[default]
    Block,
    /// Busy mode (Mercury's `NA_NO_BLOCK`): `progress` never sleeps; with a timeout it polls
    /// until the deadline. The ofi plugin opens its completion queues without a wait object
    /// (`FI_WAIT_NONE`), which spares the provider the wait-set signalling on every completion,
    /// and `wait_fd()` is then the wake eventfd only. For a caller that owns a core and spins.
    #[doc(alias = "NA_NO_BLOCK")]
    NoBlock,
}

/// Who serializes a class's calls into its transport (`na_init_info::thread_mode`). Either way
/// the class may be used from any thread; the modes differ in cost and in how contexts driven
/// by several threads at once share the transport.
#[doc(alias = "na_thread_mode")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThreadMode {
    /// na serializes every call on the class's transport domain with one lock of its own, held
    /// only around each call; the ofi plugin opens its domain `FI_THREAD_DOMAIN`, so the
    /// provider takes none of its own locks. What Mercury's tools run with
    /// (`NA_THREAD_MODE_SINGLE`), without their one-thread promise. Cheapest while one thread at
    /// a time drives the class's contexts; contexts polled by several threads at once wait on
    /// each other's calls. The default.
    #[default]
    #[doc(alias = "NA_THREAD_MODE_SINGLE")]
    Serialized,
    /// The provider serializes (`FI_THREAD_SAFE`, Mercury's default): its own, finer locks on
    /// every call and no class-wide lock, for several threads driving several contexts of one
    /// class at once.
    Provider,
}

/// A parsed info string: `<plugin>[+<protocol>][://[<host>][:<port>]]` (`na_info`).
///
/// `host` may be an IP address, a host name or an interface name (`"lo"`); the plugin decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoString {
    /// Plugin name (`"ofi"`), or None when only a protocol was given (`"tcp"`).
    pub plugin: Option<String>,
    /// Protocol (`"tcp"`, `"tcp;ofi_rxm"`, `"net"`, `"verbs;ofi_rxm"`), if given.
    pub protocol: Option<String>,
    /// Host, IP or interface, if given.
    pub host: Option<String>,
    /// Port, if given.
    pub port: Option<u16>,
}

impl InfoString {
    /// Parses an info string; malformed ones are `InvalidArg`.
    pub fn parse(info: &str) -> Result<InfoString> {
        let bad = |why: &str| {
            tracing::warn!(info, why, "na: malformed info string");
            Error::InvalidArg
        };
        let (class, rest) = match info.split_once("://") {
            Some((c, r)) => (c, Some(r)),
            None => (info, None),
        };
        if class.is_empty() {
            return Err(bad("empty class part"));
        }
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ';' | '.'))
        };
        let (plugin, protocol) = match class.split_once('+') {
            Some((p, proto)) => {
                if !valid(p) || !valid(proto) || p.contains(';') {
                    return Err(bad("bad plugin or protocol name"));
                }
                (Some(p.to_string()), Some(proto.to_string()))
            }
            None => {
                if !valid(class) {
                    return Err(bad("bad plugin or protocol name"));
                }
                (None, Some(class.to_string()))
            }
        };
        let (mut host, mut port) = (None, None);
        if let Some(rest) = rest {
            if rest.contains('/') || rest.contains(char::is_whitespace) {
                return Err(bad("unexpected characters in host part"));
            }
            let (h, p) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            if !h.is_empty() {
                host = Some(h.to_string());
            }
            if let Some(p) = p {
                port = Some(p.parse::<u16>().map_err(|_| bad("bad port"))?);
            }
        }
        Ok(InfoString {
            plugin,
            protocol,
            host,
            port,
        })
    }
}

/// One row of the plugin table (`na_class_table`).
pub(crate) struct PluginEntry {
    pub(crate) name: &'static str,
    /// Whether the plugin serves a bare protocol name (`"tcp"` → ofi).
    pub(crate) check_protocol: fn(&str) -> bool,
    pub(crate) initialize: fn(&InfoString, bool, &InitOptions) -> Result<Arc<dyn Plugin>>,
}

/// The plugins compiled in, in the order a bare protocol is matched against them.
pub(crate) static PLUGINS: &[PluginEntry] = &[
    PluginEntry {
        name: "ofi",
        check_protocol: crate::plugins::ofi::check_protocol,
        initialize: crate::plugins::ofi::initialize,
    },
    PluginEntry {
        name: "inproc",
        check_protocol: crate::plugins::inproc::check_protocol,
        initialize: crate::plugins::inproc::initialize,
    },
];

/// Picks the table row for a parsed info string.
pub(crate) fn select(info: &InfoString) -> Result<&'static PluginEntry> {
    let found = match (&info.plugin, &info.protocol) {
        (Some(p), _) => PLUGINS.iter().find(|e| e.name == p),
        (None, Some(proto)) => PLUGINS
            .iter()
            .find(|e| e.name == proto)
            .or_else(|| PLUGINS.iter().find(|e| (e.check_protocol)(proto))),
        (None, None) => None,
    };
    found.ok_or_else(|| {
        tracing::warn!(?info, "na: no plugin for this info string");
        Error::ProtoNoSupport
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn p(s: &str) -> InfoString {
        InfoString::parse(s).unwrap()
    }

    #[test]
    fn parses_mercury_info_strings() {
        assert_eq!(
            p("ofi+tcp"),
            InfoString {
                plugin: Some("ofi".into()),
                protocol: Some("tcp".into()),
                host: None,
                port: None
            }
        );
        let i = p("ofi+tcp;ofi_rxm://127.0.0.1:35833");
        assert_eq!(i.protocol.as_deref(), Some("tcp;ofi_rxm"));
        assert_eq!(i.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(i.port, Some(35833));
        let i = p("ofi+tcp://lo");
        assert_eq!((i.host.as_deref(), i.port), (Some("lo"), None));
        let i = p("ofi+tcp://:4000");
        assert_eq!((i.host, i.port), (None, Some(4000)));
        assert_eq!(
            p("ofi+verbs;ofi_rxm").protocol.as_deref(),
            Some("verbs;ofi_rxm")
        );
        assert_eq!(p("inproc").plugin, None);
        assert_eq!(p("inproc").protocol.as_deref(), Some("inproc"));
    }

    #[test]
    fn rejects_malformed_info_strings() {
        for bad in [
            "",
            "+tcp",
            "ofi+",
            "ofi+tcp://127.0.0.1:99999",
            "ofi+tcp://127.0.0.1:port",
            "ofi+tcp://a/b",
            "of i+tcp",
            "ofi;x+tcp",
            "://host",
        ] {
            assert_eq!(InfoString::parse(bad), Err(Error::InvalidArg), "{bad:?}");
        }
    }

    #[test]
    fn unknown_plugin_is_protonosupport() {
        assert_eq!(select(&p("nope+tcp")).err(), Some(Error::ProtoNoSupport));
        assert_eq!(select(&p("bogus")).err(), Some(Error::ProtoNoSupport));
        assert_eq!(select(&p("tcp")).unwrap().name, "ofi");
        assert_eq!(select(&p("inproc")).unwrap().name, "inproc");
    }
}
