//! A fixed team of worker threads for the engine's fork-join sections, waking in a
//! microsecond instead of the tens of microseconds a sleeping thread takes.
//!
//! # Why not rayon
//!
//! A training step forks and joins a few times (the large products, Adam's chunks), with a
//! little serial work between the sections. rayon's idle workers go to sleep within about
//! 20 µs, and waking one (a futex wake, and on a virtual machine an inter-processor
//! interrupt through the hypervisor) took 40–90 µs on our 2-core KVM guest: most of a
//! section's parallel time (`examples/join_cost.rs` measures it). A team member instead
//! *spins* for [`SPIN`] after each section before it parks, as OpenMP runtimes do, so the
//! sections of a step find it awake; an idle backend costs nothing once the spin ends.
//!
//! # Model
//!
//! [`Team::for_each_mut`] hands each of `threads` members (the caller is member 0) a
//! contiguous range of the items, runs them, and returns when all are done; it is the only
//! parallel primitive the engine needs. Which member runs an item never changes what is
//! computed, so results do not depend on the team's size. A panic in any member is
//! re-raised on the caller after every member has finished.
//!
//! Spinning members and a static share-out only pay while every member has a core to
//! itself. When another process holds one (a loaded machine), each section waits for the
//! scheduler to run the member sharing that core, and two threads ran 1.8× *slower* than
//! one; so the team watches how long the caller waits and sits out a while when members
//! keep coming late ([`Team::take_turn`]).

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle member spins (and then yields) before it parks.
pub const SPIN: Duration = Duration::from_micros(500);

/// Late sections in a row after which the team sits out ([`Team::take_turn`]).
pub const LATE_SECTIONS: u32 = 3;
/// Sections in a row on time after which the backoff starts again from [`MIN_BACKOFF`].
pub const ON_TIME_SECTIONS: u32 = 50;
/// A wait shorter than this is never late (waking a parked member, small sections).
const LATE_FLOOR: Duration = Duration::from_micros(100);
/// Engine calls the team sits out after its first late streak, and at most.
pub const MIN_BACKOFF: u32 = 100;
pub const MAX_BACKOFF: u32 = 6400;

/// A section's body with its lifetime erased (see [`Team::run`] for why that is sound).
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync`, and `Team::run` keeps it alive until every member is done.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

/// State shared by the caller and the members.
struct Shared {
    /// Sections posted so far; a member runs each once.
    generation: AtomicUsize,
    /// The current section. Written by the caller only while no member can read it: before
    /// bumping `generation`, and after every member has counted itself out of `pending`.
    job: UnsafeCell<Option<Job>>,
    /// Members still running the current section.
    pending: AtomicUsize,
    /// Members that announced they are about to park.
    parked: AtomicUsize,
    /// The first panic of a member in the current section.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    shutdown: AtomicBool,
}

// SAFETY: `job` is only accessed as described on the field; everything else is atomic or
// locked.
unsafe impl Sync for Shared {}

/// A fixed team of `threads − 1` spawned members plus the caller.
pub struct Team {
    shared: Arc<Shared>,
    members: Vec<(Thread, JoinHandle<()>)>,
    /// Sections in a row in which the caller waited for the members longer than its own
    /// part took (see [`Team::take_turn`]).
    late: Cell<u32>,
    /// Sections in a row on time.
    on_time: Cell<u32>,
    /// Turns still to skip, and the length of the next backoff.
    skip: Cell<u32>,
    backoff: Cell<u32>,
    /// Not `Sync`: a section's body cannot reach the team, so sections never nest (a
    /// member posting a section would overwrite the one it is running).
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Team")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Team {
    /// Starts `threads − 1` members (named `safestep-cpu-N`), each running `on_start` once.
    pub fn new(threads: usize, on_start: fn()) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            pending: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            panic: Mutex::new(None),
            shutdown: AtomicBool::new(false),
        });
        let mut team = Team {
            shared,
            members: Vec::new(),
            late: Cell::new(0),
            on_time: Cell::new(0),
            skip: Cell::new(0),
            backoff: Cell::new(MIN_BACKOFF),
            _not_sync: PhantomData,
        };
        for id in 1..threads.max(1) {
            let shared = Arc::clone(&team.shared);
            // On error `team` is dropped, which stops the members already started.
            let handle = thread::Builder::new()
                .name(format!("safestep-cpu-{id}"))
                .spawn(move || {
                    on_start();
                    member(&shared, id);
                })?;
            team.members.push((handle.thread().clone(), handle));
        }
        Ok(team)
    }

    /// Whether the next engine call should use the team (`false`: run it on the caller's
    /// thread alone). A team only pays when its members get their cores: when another
    /// process holds one, a member's share of every section waits for the scheduler to run
    /// it, and two threads run slower than one. So after [`LATE_SECTIONS`] sections in a
    /// row in which the caller waited for the members longer than its own part took, the
    /// team sits out the next `backoff` calls (doubling from [`MIN_BACKOFF`] to
    /// [`MAX_BACKOFF`] each time that repeats, back to the minimum after
    /// [`ON_TIME_SECTIONS`] sections in a row on time). Results do not depend on it: only
    /// where the work runs changes.
    pub fn take_turn(&self) -> bool {
        match self.skip.get() {
            0 => true,
            n => {
                self.skip.set(n - 1);
                false
            }
        }
    }

    /// Books one section: `own` the caller's part, `waited` its wait for the members.
    fn book(&self, own: Duration, waited: Duration) {
        if waited <= own.max(LATE_FLOOR) {
            self.late.set(0);
            self.on_time.set(self.on_time.get().saturating_add(1));
            if self.on_time.get() >= ON_TIME_SECTIONS {
                self.backoff.set(MIN_BACKOFF);
            }
            return;
        }
        self.on_time.set(0);
        self.late.set(self.late.get() + 1);
        if self.late.get() >= LATE_SECTIONS {
            self.late.set(0);
            self.skip.set(self.backoff.get());
            self.backoff.set((self.backoff.get() * 2).min(MAX_BACKOFF));
        }
    }

    /// Members, the caller included.
    pub fn threads(&self) -> usize {
        self.members.len() + 1
    }

    /// Runs `f(i, &mut items[i])` for every item, member `t` of `threads` taking the
    /// contiguous range `[t·len/threads, (t+1)·len/threads)` in order; returns when all are
    /// done.
    pub fn for_each_mut<P: Send>(&self, items: &mut [P], f: impl Fn(usize, &mut P) + Sync) {
        let len = items.len();
        let threads = self.threads();
        if threads == 1 || len <= 1 {
            items.iter_mut().enumerate().for_each(|(i, p)| f(i, p));
            return;
        }
        let base = ItemsPtr(items.as_mut_ptr());
        self.run(&|t: usize| {
            let base = &base;
            for i in t * len / threads..(t + 1) * len / threads {
                // SAFETY: `i < len`, so the pointer is in `items`; the ranges of different
                // members are disjoint, so this is the only reference to item `i`, and
                // `items` stays mutably borrowed until `run` has returned.
                let item = unsafe { &mut *base.0.add(i) };
                f(i, item);
            }
        });
    }

    /// Runs `f(i, &mut items[i])` for every item, each member taking the next unclaimed
    /// item until none is left: for items of uneven cost. Which member runs an item is left
    /// to chance, so `f` must not depend on it (it cannot see it).
    pub fn for_each_mut_dynamic<P: Send>(&self, items: &mut [P], f: impl Fn(usize, &mut P) + Sync) {
        let len = items.len();
        if self.threads() == 1 || len <= 1 {
            items.iter_mut().enumerate().for_each(|(i, p)| f(i, p));
            return;
        }
        let base = ItemsPtr(items.as_mut_ptr());
        let next = AtomicUsize::new(0);
        self.run(&|_| {
            let base = &base;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= len {
                    break;
                }
                // SAFETY: `i < len`, and `fetch_add` hands each index to exactly one member,
                // so this is the only reference to item `i` while `items` stays borrowed.
                let item = unsafe { &mut *base.0.add(i) };
                f(i, item);
            }
        });
    }

    /// Runs `f(t)` on every member `t` (the caller is member 0) and waits for all of them.
    fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        let shared = &*self.shared;
        // A payload left by a section whose caller part panicked as well.
        if let Ok(mut stale) = shared.panic.lock() {
            stale.take();
        }
        // SAFETY: only the lifetime is erased. The pointer is read by members only while
        // they count in `pending`, and this function does not return (or unwind) before
        // `pending` is zero: `WaitForMembers` waits on drop.
        let job: Job = Job(unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync)>(
                f,
            )
        });
        // SAFETY: no member reads `job` now: the previous section's members have all counted
        // out (`run` waited for them), and the next generation is not posted yet. `Team` is
        // not `Sync`, so no other thread can be inside `run`.
        unsafe { *shared.job.get() = Some(job) };
        shared.pending.store(self.members.len(), Ordering::SeqCst);
        shared.generation.fetch_add(1, Ordering::SeqCst);
        if shared.parked.load(Ordering::SeqCst) > 0 {
            for (thread, _) in &self.members {
                thread.unpark();
            }
        }
        let start = Instant::now();
        let wait = WaitForMembers(shared);
        f(0);
        let own = start.elapsed();
        drop(wait);
        self.book(own, start.elapsed() - own);
        let panic = shared.panic.lock().map(|mut p| p.take()).unwrap_or(None);
        if let Some(payload) = panic {
            panic::resume_unwind(payload);
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        for (thread, handle) in self.members.drain(..) {
            thread.unpark();
            // A member only exits through this flag; its panics are caught in `member`.
            let _ = handle.join();
        }
    }
}

/// A raw pointer to the items of [`Team::for_each_mut`], shared by the members.
struct ItemsPtr<P>(*mut P);
// SAFETY: each member dereferences disjoint items only, and `P: Send`.
unsafe impl<P: Send> Sync for ItemsPtr<P> {}

/// On drop (also while unwinding), waits until every member has finished the section.
struct WaitForMembers<'a>(&'a Shared);

impl Drop for WaitForMembers<'_> {
    fn drop(&mut self) {
        let start = Instant::now();
        let mut polls = 0u32;
        let mut spin = true;
        while self.0.pending.load(Ordering::Acquire) != 0 {
            polls = polls.wrapping_add(1);
            if spin && polls.is_multiple_of(64) {
                spin = start.elapsed() < Duration::from_micros(50);
            }
            if spin {
                std::hint::spin_loop();
            } else {
                // A member was descheduled (a loaded machine): let it have the core.
                thread::yield_now();
            }
        }
    }
}

/// A member's life: wait for a section, run its part, count out; until shutdown.
fn member(shared: &Shared, id: usize) {
    let mut seen = 0;
    loop {
        seen = wait_for_section(shared, seen);
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the caller wrote `job` before posting this generation and keeps it, and
        // what it points to, alive until this member has decremented `pending` below.
        let job = unsafe { *shared.job.get() };
        if let Some(Job(f)) = job {
            // SAFETY: see above: the closure outlives this call.
            let f = unsafe { &*f };
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(id))) {
                if let Ok(mut first) = shared.panic.lock() {
                    first.get_or_insert(payload);
                }
            }
        }
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

/// Waits until the generation differs from `seen` (or shutdown) and returns it: spins and
/// yields for [`SPIN`], then parks until [`Team::run`] unparks it.
fn wait_for_section(shared: &Shared, seen: usize) -> usize {
    let mut start = Instant::now();
    let mut polls = 0u32;
    loop {
        let generation = shared.generation.load(Ordering::Acquire);
        if generation != seen {
            return generation;
        }
        polls = polls.wrapping_add(1);
        if !polls.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        if start.elapsed() < SPIN {
            thread::yield_now();
            continue;
        }
        // Announce the park, then look once more: `run` bumps the generation before it
        // reads `parked` (both SeqCst), so either this load sees the new section or `run`
        // sees the announcement and unparks (an unpark before the park is not lost).
        shared.parked.fetch_add(1, Ordering::SeqCst);
        if shared.generation.load(Ordering::SeqCst) == seen {
            thread::park();
        }
        shared.parked.fetch_sub(1, Ordering::SeqCst);
        start = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_for_any_team_size() {
        for threads in 1..=4 {
            let team = Team::new(threads, || {}).expect("threads start");
            assert_eq!(team.threads(), threads);
            for len in [0, 1, 2, 3, 7, 64] {
                let mut items: Vec<(usize, u32)> = (0..len).map(|i| (i, 0)).collect();
                for _ in 0..50 {
                    team.for_each_mut(&mut items, |i, item| {
                        assert_eq!(item.0, i);
                        item.1 += 1;
                    });
                }
                assert!(items.iter().all(|&(_, runs)| runs == 50), "{threads}/{len}");
            }
        }
    }

    #[test]
    fn dynamic_items_run_once_each() {
        for threads in 1..=3 {
            let team = Team::new(threads, || {}).expect("threads start");
            for len in [0, 1, 5, 200] {
                let mut items: Vec<(usize, u32)> = (0..len).map(|i| (i, 0)).collect();
                for _ in 0..20 {
                    team.for_each_mut_dynamic(&mut items, |i, item| {
                        assert_eq!(item.0, i);
                        item.1 += 1;
                    });
                }
                assert!(items.iter().all(|&(_, runs)| runs == 20), "{threads}/{len}");
            }
        }
    }

    #[test]
    fn members_wake_after_parking() {
        let team = Team::new(2, || {}).expect("threads start");
        let mut items = vec![0u32; 2];
        for _ in 0..3 {
            thread::sleep(SPIN * 4);
            team.for_each_mut(&mut items, |_, x| *x += 1);
        }
        assert_eq!(items, vec![3, 3]);
    }

    #[test]
    fn a_members_panic_reaches_the_caller_and_the_team_goes_on() {
        let team = Team::new(2, || {}).expect("threads start");
        let mut items = vec![0u32, 1];
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            team.for_each_mut(&mut items, |i, _| {
                if i == 1 {
                    panic!("member 1 fails");
                }
            })
        }));
        assert!(caught.is_err());
        team.for_each_mut(&mut items, |_, x| *x += 1);
        assert_eq!(items, vec![1, 2]);
    }

    #[test]
    fn late_streaks_make_the_team_sit_out_longer_each_time() {
        let team = Team::new(2, || {}).expect("threads start");
        let (own, late, on_time) = (
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_micros(30),
        );
        let sat_out = |team: &Team| {
            let mut n = 0;
            while !team.take_turn() {
                n += 1;
            }
            n
        };
        assert_eq!(sat_out(&team), 0);
        // Two late sections and one on time: no streak.
        team.book(own, late);
        team.book(own, late);
        team.book(own, on_time);
        team.book(own, late);
        assert_eq!(sat_out(&team), 0);
        team.book(own, late);
        team.book(own, late);
        assert_eq!(sat_out(&team), MIN_BACKOFF);
        for _ in 0..LATE_SECTIONS {
            team.book(own, late);
        }
        assert_eq!(sat_out(&team), 2 * MIN_BACKOFF);
        // A few sections on time keep the backoff; a long run of them resets it.
        team.book(own, on_time);
        for _ in 0..LATE_SECTIONS {
            team.book(own, late);
        }
        assert_eq!(sat_out(&team), 4 * MIN_BACKOFF);
        for _ in 0..ON_TIME_SECTIONS {
            team.book(own, on_time);
        }
        for _ in 0..LATE_SECTIONS {
            team.book(own, late);
        }
        assert_eq!(sat_out(&team), MIN_BACKOFF);
        // Short waits are never late, however short the caller's part.
        for _ in 0..10 {
            team.book(Duration::ZERO, Duration::from_micros(90));
        }
        assert_eq!(sat_out(&team), 0);
    }

    #[test]
    fn members_run_the_start_hook() {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let team = Team::new(3, || {
            STARTED.fetch_add(1, Ordering::SeqCst);
        })
        .expect("threads start");
        let mut items = vec![0u8; 3];
        team.for_each_mut(&mut items, |_, _| {});
        assert_eq!(STARTED.load(Ordering::SeqCst), 2);
    }
}
