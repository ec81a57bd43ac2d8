//! The CPU backend's thread pool: persistent workers that spin briefly between operations.
//!
//! A decode step is ~150 short parallel operations; waking sleeping threads through the kernel for
//! each (as a general-purpose pool does once its workers fall asleep) costs more than the work of
//! the smaller ones. Workers here poll for the next operation for a while (~50 µs) before parking,
//! so back-to-back operations of one forward pass reach them without a syscall. The calling thread
//! takes tasks too. Tasks are claimed from an atomic counter, so uneven tiles balance themselves.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker polls before parking.
const SPIN: Duration = Duration::from_micros(50);

type Task<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per operation; workers wait for it to change.
    epoch: AtomicUsize,
    /// The operation's task function, valid while `run` waits (its lifetime is erased).
    task: UnsafeCell<Option<Task<'static>>>,
    n_tasks: AtomicUsize,
    /// Next task to claim, tagged with its epoch in the high 32 bits: a worker still looping over
    /// a finished operation cannot claim (and run the dead function of) the next one.
    next: AtomicU64,
    /// Tasks finished in this operation.
    done: AtomicUsize,
    stop: AtomicBool,
    /// Workers parked on `wake` (changed and read under `lock`): `run` skips the wake-up call,
    /// a system call, when every worker is still polling.
    parked: AtomicUsize,
    /// The first panic of a task of the current operation, re-raised on the caller's thread once
    /// every task has finished (so no thread still uses the operation's borrowed closure).
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `task` is written only by `run` while no worker reads it (before the epoch is published
// with Release ordering, and after every task of the previous epoch finished); workers read it only
// after observing the new epoch with Acquire ordering.
unsafe impl Sync for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes `run` calls (the pool runs one operation at a time).
    running: Mutex<()>,
}

impl Pool {
    /// A pool of `n_threads` threads in all: the caller plus `n_threads - 1` workers.
    pub fn new(n_threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            task: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            panic: Mutex::new(None),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..n_threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("rustorch-cpu-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a CPU worker thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every `i` in `0..n_tasks` across the pool and returns when all are done.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if n_tasks == 1 || self.workers.is_empty() {
            (0..n_tasks).for_each(f);
            return;
        }
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // Only this thread writes `epoch` (under `running`).
        let epoch = s.epoch.load(Ordering::Relaxed).wrapping_add(1);
        // Close the counter first: a worker still on an earlier operation (it may have read its
        // epoch long ago) can then claim nothing, whatever it reads of the fields written next.
        // It finds `n_tasks` only through the Release store below, which comes after this one.
        s.next.store(tag(epoch, CLOSED), Ordering::Relaxed);
        // SAFETY: the lifetime is erased only for the duration of this call: we return after
        // `done == n_tasks`, and threads read `task` only after claiming an index of this
        // operation, which they can do only until the last task has been claimed.
        let task: Task<'static> = unsafe { std::mem::transmute::<Task<'_>, Task<'static>>(f) };
        // SAFETY: no thread reads `task` now: reads follow a successful claim, and the counter is
        // closed.
        unsafe { *s.task.get() = Some(task) };
        s.done.store(0, Ordering::Relaxed);
        s.n_tasks.store(n_tasks, Ordering::Release);
        let parked = {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.next.store(tag(epoch, 0), Ordering::Release);
            s.epoch.store(epoch, Ordering::Release);
            s.parked.load(Ordering::Relaxed)
        };
        // A worker parks only after seeing the old epoch under `lock`, so one that is not counted
        // here will see the new epoch before it would wait.
        if parked > 0 {
            s.wake.notify_all();
        }
        claim_tasks(s, epoch);
        while s.done.load(Ordering::Acquire) < n_tasks {
            std::hint::spin_loop();
        }
        let panic = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
    }
}

/// The counter's index while an operation is being set up: above any task count.
const CLOSED: usize = 0xFFFF_FFFF;

fn tag(epoch: usize, index: usize) -> u64 {
    ((epoch as u64 & 0xFFFF_FFFF) << 32) | index as u64
}

/// Claims and runs tasks of operation `epoch` until none is left.
///
/// The task and the count are read only in ways a late thread cannot misuse: `n_tasks` may be
/// another operation's, but then the counter no longer carries `epoch` and the claim fails; the
/// closure is read only after a claim succeeded, while its operation is still running.
fn claim_tasks(s: &Shared, epoch: usize) {
    let mut cur = s.next.load(Ordering::Acquire);
    loop {
        if cur >> 32 != tag(epoch, 0) >> 32 {
            return; // a later operation started: this one is finished
        }
        let i = (cur & 0xFFFF_FFFF) as usize;
        if i >= s.n_tasks.load(Ordering::Acquire) {
            return;
        }
        match s
            .next
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // SAFETY: index `i` of the live operation `epoch` is ours: the caller wrote `task`
                // before publishing the counter we just advanced, and keeps it until `done`
                // counts this index.
                let task = unsafe { *s.task.get() }.expect("a published operation has a task");
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(i)));
                if let Err(payload) = run {
                    let mut first = s.panic.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert(payload);
                }
                s.done.fetch_add(1, Ordering::Release);
                cur = s.next.load(Ordering::Acquire);
            }
            Err(now) => cur = now,
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0usize;
    loop {
        // Poll for a new epoch, then park.
        let start = Instant::now();
        let mut epoch = s.epoch.load(Ordering::Acquire);
        let mut spins = 0u32;
        while epoch == seen {
            std::hint::spin_loop();
            epoch = s.epoch.load(Ordering::Acquire);
            spins = spins.wrapping_add(1);
            // Reading the clock costs more than a poll: look at it now and then.
            if spins.is_multiple_of(256) && start.elapsed() >= SPIN {
                break;
            }
        }
        if epoch == seen {
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if s.stop.load(Ordering::Acquire) {
                    return;
                }
                epoch = s.epoch.load(Ordering::Acquire);
                if epoch != seen {
                    break;
                }
                s.parked.fetch_add(1, Ordering::Relaxed);
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                s.parked.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        seen = epoch;
        claim_tasks(s, epoch);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.stop.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Hands out disjoint chunks of a mutable slice to pool tasks.
pub struct Chunks<'a, T> {
    ptr: *mut T,
    len: usize,
    chunk: usize,
    _life: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: chunks handed out by `get` are disjoint (one per index), so sharing the splitter across
// threads hands each thread its own `&mut` region.
unsafe impl<T: Send> Sync for Chunks<'_, T> {}

impl<'a, T> Chunks<'a, T> {
    pub fn new(slice: &'a mut [T], chunk: usize) -> Self {
        assert!(chunk > 0);
        Chunks {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            chunk,
            _life: std::marker::PhantomData,
        }
    }

    pub fn count(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// Chunk `i`.
    ///
    /// # Safety
    /// Each index must be taken at most once while the chunks are alive (a pool task per index).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self, i: usize) -> &'a mut [T] {
        let start = i * self.chunk;
        assert!(start < self.len, "chunk {i} out of range");
        let len = self.chunk.min(self.len - start);
        // SAFETY: in bounds (checked above) and disjoint from every other index's chunk; the caller
        // takes each index once.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// `f(i, chunk_i)` for every chunk of `slice`, on the pool.
pub fn for_each_chunk<T: Send>(
    pool: &Pool,
    slice: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunks = Chunks::new(slice, chunk);
    pool.run(chunks.count(), &|i| {
        // SAFETY: the pool runs each index exactly once.
        f(i, unsafe { chunks.get(i) })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let pool = Pool::new(3);
        for n in [0usize, 1, 2, 7, 100, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    /// A panicking task (a bug) reaches the caller as a panic, after every other task of the
    /// operation has finished; it neither hangs the pool nor leaves it unusable.
    #[test]
    fn a_task_panic_reaches_the_caller_and_the_pool_still_works() {
        let pool = Pool::new(3);
        for bad in [0usize, 5, 63] {
            let ran = AtomicUsize::new(0);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.run(64, &|i| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    assert!(i != bad, "task {i} fails");
                })
            }));
            let msg = result.expect_err("the panic is re-raised");
            assert_eq!(
                msg.downcast_ref::<String>().unwrap(),
                &format!("task {bad} fails")
            );
            assert_eq!(ran.load(Ordering::Relaxed), 64, "every task ran");
        }
        let hits = AtomicUsize::new(0);
        pool.run(100, &|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 100);
    }

    /// Back-to-back operations of different sizes with more threads than cores, so workers are
    /// often preempted between seeing an operation and claiming from it: a late worker must never
    /// run one operation's closure, or an index beyond its count.
    #[test]
    fn late_workers_never_mix_operations() {
        let pool = Pool::new(4);
        for round in 0..20_000usize {
            let n = 2 + round % 7;
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                assert!(i < n, "index {i} of an operation of {n}");
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "round {round}: every task exactly once"
            );
        }
    }

    #[test]
    fn chunks_cover_the_slice() {
        let pool = Pool::new(2);
        let mut v = vec![0usize; 1003];
        for_each_chunk(&pool, &mut v, 10, |i, c| {
            for x in c.iter_mut() {
                *x = i + 1;
            }
        });
        assert!(v.iter().enumerate().all(|(j, &x)| x == j / 10 + 1));
    }

    #[test]
    fn many_back_to_back_runs_and_idle_gaps() {
        let pool = Pool::new(2);
        let sum = AtomicUsize::new(0);
        for round in 0..2000 {
            pool.run(4, &|i| {
                sum.fetch_add(i, Ordering::Relaxed);
            });
            if round % 500 == 0 {
                std::thread::sleep(Duration::from_millis(2)); // workers park, then wake
            }
        }
        assert_eq!(sum.load(Ordering::Relaxed), 2000 * 6);
    }
}
