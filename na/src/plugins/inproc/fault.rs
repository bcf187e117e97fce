//! Seeded fault injection for inproc: the configuration, a small PRNG, and per-send decisions.

/// A tiny deterministic PRNG (splitmix64): the same seed gives the same stream on every machine.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A stream for `seed`, split per endpoint by `stream`.
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next();
        r
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `ppm` per million.
    pub(crate) fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && (self.next() % 1_000_000) < u64::from(ppm)
    }

    /// A value in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Which faults an inproc [`super::Fabric`] injects, how often (per million sends or RMA
/// operations), and the transport's bounds. Decisions are drawn at post time from a PRNG per
/// endpoint seeded from `seed`, so a single-threaded run with the same seed produces the same
/// event trace byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultConfig {
    /// Seed of every endpoint's PRNG.
    pub seed: u64,
    /// The operation completes at once with `IoError`, without effect.
    pub error: u32,
    /// The destination vanishes (as [`super::Fabric::vanish`]); the operation fails `HostUnreach`.
    pub vanish: u32,
    /// The receiver's pre-posted unexpected receives count as exhausted for `exhaust_ticks`
    /// ticks: unexpected messages wait in its mailbox meanwhile.
    pub exhaust: u32,
    /// The message arrives cut to a shorter length (the receive completes Ok with fewer bytes:
    /// the layer above must notice from its own header).
    pub truncate: u32,
    /// One byte of the message (past the unexpected header) arrives flipped.
    pub corrupt: u32,
    /// The message overtakes up to all of those already queued at the receiver.
    pub reorder: u32,
    /// The message (or RMA) becomes due only `1..=max_delay_ticks` progress ticks later.
    pub delay: u32,
    /// The message is lost: the send completes Ok, nothing arrives.
    pub drop: u32,
    /// The message arrives twice (the copy has no sender operation).
    pub duplicate: u32,
    /// Upper bound of an injected delay, in ticks of the receiver's (or initiator's) clock.
    pub max_delay_ticks: u32,
    /// Length of an injected exhaustion, in ticks.
    pub exhaust_ticks: u32,
    /// Messages an endpoint holds while no matching receive is posted (per queue: unexpected,
    /// expected). At the bound a further message is refused: its send completes with `Busy`,
    /// without effect, and the receiver logs a `tracing` warning.
    pub hold_cap: usize,
    /// Record the fabric's event trace ([`super::Fabric::trace`]).
    pub trace: bool,
}

impl FaultConfig {
    /// No faults, holds up to 4096 messages per queue, no trace.
    pub fn none() -> FaultConfig {
        FaultConfig {
            seed: 0,
            error: 0,
            vanish: 0,
            exhaust: 0,
            truncate: 0,
            corrupt: 0,
            reorder: 0,
            delay: 0,
            drop: 0,
            duplicate: 0,
            max_delay_ticks: 4,
            exhaust_ticks: 4,
            hold_cap: 4096,
            trace: false,
        }
    }

    /// Every fault at a rate that fires a few times in a workload of tens of operations, with the
    /// trace on: what the exactly-once harness runs.
    pub fn seeded(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            error: 40_000,
            vanish: 4_000,
            exhaust: 30_000,
            truncate: 30_000,
            corrupt: 30_000,
            reorder: 60_000,
            delay: 120_000,
            drop: 30_000,
            duplicate: 30_000,
            max_delay_ticks: 6,
            exhaust_ticks: 5,
            hold_cap: 64,
            trace: true,
        }
    }

    /// True when no fault can fire (posts then skip the PRNG).
    pub fn is_quiet(&self) -> bool {
        self.error == 0
            && self.vanish == 0
            && self.exhaust == 0
            && self.truncate == 0
            && self.corrupt == 0
            && self.reorder == 0
            && self.delay == 0
            && self.drop == 0
            && self.duplicate == 0
    }
}

impl Default for FaultConfig {
    fn default() -> FaultConfig {
        FaultConfig::none()
    }
}

/// What befalls one send, drawn at post time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SendFaults {
    pub(crate) error: bool,
    pub(crate) vanish: bool,
    pub(crate) drop: bool,
    pub(crate) duplicate: bool,
    pub(crate) delay: u32,
    /// Position (from the back, at most the queue length) the message is inserted at.
    pub(crate) reorder: Option<u32>,
    pub(crate) truncate_to: Option<usize>,
    /// (offset, xor mask) of a flipped byte.
    pub(crate) corrupt: Option<(usize, u8)>,
    pub(crate) exhaust: u32,
}

impl SendFaults {
    /// Draws the faults of a message of `len` bytes whose first `header` bytes are the plugin's.
    pub(crate) fn draw(cfg: &FaultConfig, rng: &mut Rng, len: usize, header: usize) -> SendFaults {
        let mut f = SendFaults::default();
        if rng.chance(cfg.error) {
            f.error = true;
            return f;
        }
        if rng.chance(cfg.vanish) {
            f.vanish = true;
            return f;
        }
        if rng.chance(cfg.drop) {
            f.drop = true;
            return f;
        }
        f.duplicate = rng.chance(cfg.duplicate);
        if rng.chance(cfg.delay) {
            f.delay = 1 + rng.below(u64::from(cfg.max_delay_ticks.max(1))) as u32;
        }
        if rng.chance(cfg.reorder) {
            f.reorder = Some(1 + rng.below(8) as u32);
        }
        if rng.chance(cfg.truncate) && len > header {
            f.truncate_to = Some(header + rng.below((len - header) as u64) as usize);
        }
        if rng.chance(cfg.corrupt) && len > header {
            let at = header + rng.below((len - header) as u64) as usize;
            f.corrupt = Some((at, 1 + rng.below(255) as u8));
        }
        if rng.chance(cfg.exhaust) {
            f.exhaust = cfg.exhaust_ticks.max(1);
        }
        f
    }

    /// Draws the faults of an RMA operation (error, vanish, delay).
    pub(crate) fn draw_rma(cfg: &FaultConfig, rng: &mut Rng) -> SendFaults {
        let mut f = SendFaults::default();
        if rng.chance(cfg.error) {
            f.error = true;
        } else if rng.chance(cfg.vanish) {
            f.vanish = true;
        } else if rng.chance(cfg.delay) {
            f.delay = 1 + rng.below(u64::from(cfg.max_delay_ticks.max(1))) as u32;
        }
        f
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(1, 0);
                move |_| r.next()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(1, 0);
                move |_| r.next()
            })
            .collect();
        let c: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(2, 0);
                move |_| r.next()
            })
            .collect();
        let d: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(1, 1);
                move |_| r.next()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn rates_are_roughly_honoured() {
        let mut r = Rng::new(9, 0);
        let hits = (0..100_000).filter(|_| r.chance(100_000)).count();
        assert!((8_000..12_000).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| r.chance(0)));
    }

    #[test]
    fn corruption_and_truncation_spare_the_header() {
        let cfg = FaultConfig {
            truncate: 1_000_000,
            corrupt: 1_000_000,
            ..FaultConfig::none()
        };
        let mut r = Rng::new(3, 0);
        for _ in 0..1000 {
            let f = SendFaults::draw(&cfg, &mut r, 100, 8);
            let t = f.truncate_to.unwrap();
            assert!((8..100).contains(&t));
            let (at, mask) = f.corrupt.unwrap();
            assert!((8..100).contains(&at) && mask != 0);
        }
    }
}
