//! A short spin before a thread parks, while the host is nearly idle and the wake-up the
//! thread waits for is due within microseconds (`--idle-spin-us`).
//!
//! A call hops twice between threads: the API's thread hands it to a guest thread, which
//! hands the answer back. Waking a parked thread costs a futex or eventfd write, the
//! scheduler, and on a VM whose vCPU went idle an IPI and a VM exit: at 1 client those two
//! hops were about 90 µs of a 225 µs call (BENCHMARKS.md, issue 18). So, from tokio's
//! `on_thread_park` hook, a thread about to park first watches a counter for a while:
//! - a guest thread that has just run something, while no execution is out anywhere, watches
//!   for its next placement;
//! - the API's thread, while a single execution is out, watches for answers.
//!
//! Under load nothing spins: guest threads park only with executions waiting on I/O (which
//! only the park sees), and the API's thread has many out. The spin yields the CPU at every
//! turn, so a thread with work on the same CPU gets it; when yields keep lasting whole slices
//! of the scheduler, another process wants the CPU, and nothing spins for a second.
//! Wake-ups keep going through tokio's own protocol, so the spin can only delay a park,
//! never lose a wake-up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The default of `--idle-spin-us`: a little more than a Plando lookup takes a guest thread
/// at 1 client, and than a client takes to send its next request.
pub const DEFAULT_IDLE_SPIN: Duration = Duration::from_micros(250);

/// What the spin watches, host-wide: guest threads and the API's threads meet here.
pub(crate) struct Spin {
    /// How long a thread spins at most (0: never).
    budget_nanos: AtomicU64,
    /// Executions placed on guest threads and not answered.
    out: AtomicUsize,
    /// Answers handed back by guest threads (bumped after the caller's wake-up).
    answers: AtomicU64,
    /// A yield longer than this cuts a spin short ([`SLOW_YIELD`]).
    slow_yield: Duration,
    /// Spins cut short by a yield of over 3 × `slow_yield`: since when ([`since_start`]),
    /// how many.
    slow_spins: std::sync::Mutex<(u64, u32)>,
    /// No spinning before this time ([`since_start`]).
    quiet_until: AtomicU64,
}

/// A yield that gives the CPU away for longer than this gave another thread a slice of the
/// scheduler (about a millisecond here; a call of ours runs for about 100 µs): the spin ends.
const SLOW_YIELD: Duration = Duration::from_micros(500);

/// Past [`SLOW_SPINS_MAX`] yields over 3 × [`SLOW_YIELD`] within a [`SLOW_SPINS_WINDOW`],
/// nothing spins for [`QUIET_AFTER_SLOW_SPINS`] (see [`Spin::slow_spin`]).
const SLOW_SPINS_WINDOW: Duration = Duration::from_millis(100);
const SLOW_SPINS_MAX: u32 = 10;
const QUIET_AFTER_SLOW_SPINS: Duration = Duration::from_secs(1);

/// Nanoseconds since the first time anything asked.
fn since_start() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub(crate) static SPIN: Spin = Spin::new(DEFAULT_IDLE_SPIN);

impl Spin {
    const fn new(budget: Duration) -> Spin {
        Spin {
            budget_nanos: AtomicU64::new(budget.as_nanos() as u64),
            out: AtomicUsize::new(0),
            answers: AtomicU64::new(0),
            slow_yield: SLOW_YIELD,
            slow_spins: std::sync::Mutex::new((0, 0)),
            quiet_until: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_budget(&self, budget: Duration) {
        self.budget_nanos.store(budget.as_nanos().try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(super) fn placed(&self) {
        self.out.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn answered(&self) {
        self.out.fetch_sub(1, Ordering::Relaxed);
    }

    /// After the answer's send, and so its wake-up, is done.
    pub(super) fn answer_sent(&self) {
        self.answers.fetch_add(1, Ordering::Release);
    }

    /// The API's threads: while a single execution is out, until an answer comes.
    pub(crate) fn before_api_park(&self) {
        if self.out.load(Ordering::Relaxed) != 1 {
            return;
        }
        let seen = self.answers.load(Ordering::Acquire);
        self.spin_while(|| self.answers.load(Ordering::Acquire) == seen && self.out.load(Ordering::Relaxed) == 1);
    }

    /// A guest thread: while no execution is out anywhere, and if something was placed on it
    /// since it last parked idle (`parked_at`: its `placements` then; a timer's wake-up is no
    /// reason to spin again). Any placement ends it, this thread's or another's (which
    /// needs a CPU).
    pub(super) fn before_guest_park(&self, placements: &AtomicU64, parked_at: &AtomicU64) {
        if self.out.load(Ordering::Relaxed) != 0 {
            return;
        }
        let seen = placements.load(Ordering::Relaxed);
        if parked_at.swap(seen, Ordering::Relaxed) == seen {
            return;
        }
        self.spin_while(|| self.out.load(Ordering::Relaxed) == 0);
    }

    fn spin_while(&self, waiting: impl Fn() -> bool) {
        let budget = Duration::from_nanos(self.budget_nanos.load(Ordering::Relaxed));
        if budget.is_zero() || since_start() < self.quiet_until.load(Ordering::Relaxed) {
            return;
        }
        let start = Instant::now();
        while waiting() && start.elapsed() < budget {
            let before = Instant::now();
            std::thread::yield_now();
            let took = before.elapsed();
            if took > self.slow_yield {
                if took > 3 * self.slow_yield {
                    self.slow_spin();
                }
                return;
            }
        }
    }

    /// A spin cut short by a yield of over 1.5 ms: another thread took the CPU for a whole
    /// slice. Threads of ours do that now and then (yields over 500 µs: about 30 a second at
    /// 1 client, mostly SQLite's thread writing a batch of traces; over 1.5 ms: a few); a
    /// process that wants the CPU all the time does it hundreds of times a second, and each
    /// time a call waits for the slice to end.
    fn slow_spin(&self) {
        let now = since_start();
        let mut window = self.slow_spins.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_sub(window.0) > SLOW_SPINS_WINDOW.as_nanos() as u64 {
            *window = (now, 0);
        }
        window.1 += 1;
        if window.1 >= SLOW_SPINS_MAX {
            *window = (now, 0);
            self.quiet_until.store(now + QUIET_AFTER_SLOW_SPINS.as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Arc;

    /// Runs `park` on a thread of its own, then `then`, and says whether `park` returned
    /// within 10 s. The budget is an hour: a spin that missed its wake-up would not.
    fn returns(park: impl FnOnce() + Send + 'static, then: impl FnOnce()) -> bool {
        returns_within(park, then, Duration::from_secs(10))
    }

    /// Whether `park` still spins after 200 ms (it must, with an hour's budget).
    fn spins(park: impl FnOnce() + Send + 'static) -> bool {
        !returns_within(park, || (), Duration::from_millis(200))
    }

    fn returns_within(park: impl FnOnce() + Send + 'static, then: impl FnOnce(), limit: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            park();
            let _ = tx.send(());
        });
        std::thread::sleep(Duration::from_millis(20));
        then();
        rx.recv_timeout(limit).is_ok()
    }

    /// A spin of an hour, which a busy test machine's slow yields do not cut short.
    fn spin() -> Arc<Spin> {
        Arc::new(Spin { slow_yield: Duration::from_secs(3600), ..Spin::new(Duration::from_secs(3600)) })
    }

    #[test]
    fn the_api_thread_spins_only_while_one_execution_is_out_and_stops_at_its_answer() {
        let s = spin();
        assert!(returns({ let s = s.clone(); move || s.before_api_park() }, || ()), "nothing out: no spin");
        s.placed();
        s.placed();
        assert!(returns({ let s = s.clone(); move || s.before_api_park() }, || ()), "two out: no spin");
        s.answered();
        let (a, b) = (s.clone(), s.clone());
        assert!(returns(move || a.before_api_park(), move || b.answer_sent()), "the answer ends the spin");
        let (a, b) = (s.clone(), s.clone());
        assert!(spins(move || a.before_api_park()), "one out and no answer: it spins");
        b.answer_sent();
    }

    #[test]
    fn a_guest_thread_spins_after_work_while_nothing_is_out_and_stops_at_the_next_placement() {
        let s = spin();
        let (placements, parked_at) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let park = || {
            let (s, p, at) = (s.clone(), placements.clone(), parked_at.clone());
            move || s.before_guest_park(&p, &at)
        };
        let place = || {
            let (s, p) = (s.clone(), placements.clone());
            move || {
                p.fetch_add(1, Ordering::Relaxed);
                s.placed();
            }
        };
        assert!(returns(park(), || ()), "nothing ran since it started: no spin");
        // A call placed: it waits for its CRM (parks with the call out), then answers.
        place()();
        assert!(returns(park(), || ()), "an execution out: no spin");
        s.answered();
        assert!(returns(park(), place()), "a placement ends the spin");
        // That placement ran and answered too.
        s.answered();
        assert!(spins(park()), "it ran something and nothing is out: it spins");
        assert!(returns(park(), || ()), "a timer's wake-up after a spin that timed out: no spin");
        place()();
    }

    #[test]
    fn slow_yields_by_the_dozen_stop_the_spinning_for_a_while() {
        let slowed = |n| {
            let s = spin();
            s.placed();
            for _ in 0..n {
                s.slow_spin();
            }
            s
        };
        let s = slowed(SLOW_SPINS_MAX - 1);
        let a = s.clone();
        assert!(spins(move || a.before_api_park()), "a few slow yields: it still spins");
        s.answer_sent();
        let s = slowed(SLOW_SPINS_MAX);
        assert!(returns(move || s.before_api_park(), || ()), "one more: quiet");
    }

    #[test]
    fn a_budget_of_zero_never_spins() {
        let s = Arc::new(Spin::new(Duration::ZERO));
        s.placed();
        assert!(returns({ let s = s.clone(); move || s.before_api_park() }, || ()));
    }
}
