//! A small persistent thread pool for goldcrest-core's [`Parallel`] trait, so the kernels can
//! split large products across cores.
//!
//! Decode runs a few hundred matrix-vector products per token, each 50–500 µs: spawning
//! threads per product would cost more than it saves, and so would a futex round trip per
//! product on a loaded machine. The workers here are started once, spin briefly on an atomic
//! job counter after each job (most products follow each other within microseconds), and
//! then park on a condition variable until the next one.
//!
//! ```
//! use goldcrest_std::parallel::Pool;
//! let kernels = goldcrest_std::kernels::detect().with_parallel(Pool::leak(2));
//! assert_eq!(kernels.workers(), 2);
//! ```
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use goldcrest_core::kernels::Parallel;

/// How many times an idle worker polls for a new job before it parks (about 20–50 µs).
const SPIN_POLLS: u32 = 20_000;

/// One published job: the task closure with its lifetime erased, and the task count.
#[derive(Clone, Copy)]
struct Job {
    task: *const (dyn Fn(usize) + Sync + 'static),
    tasks: usize,
}

// SAFETY: the closure is `Sync`; `Pool::run` keeps it alive until no worker holds the job.
unsafe impl Send for Job {}

struct State {
    job: Option<Job>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Bumped (under `state`) for every published job; idle workers poll it.
    generation: AtomicU64,
    /// Next task index to claim.
    next: AtomicUsize,
    /// Workers that took the current job and have not let go of it.
    holding: AtomicUsize,
    /// A task panicked on a worker.
    panicked: AtomicBool,
}

/// A fixed set of worker threads that [`Kernels`](goldcrest_core::kernels::Kernels) can split
/// products across. The thread calling [`Parallel::run`] works too, so `Pool::new(n)` starts
/// `n - 1` threads. Dropping the pool stops and joins them.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Serialises concurrent `run` calls (one job at a time).
    running: Mutex<()>,
}

impl Pool {
    /// A pool of `threads` workers in total (the caller included; 0 is taken as 1).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                shutdown: false,
            }),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        });
        let threads = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("goldcrest-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a kernel worker thread")
            })
            .collect();
        Pool {
            shared,
            threads,
            running: Mutex::new(()),
        }
    }

    /// A pool that lives for the rest of the program, as
    /// [`Kernels::with_parallel`](goldcrest_core::kernels::Kernels::with_parallel) needs.
    pub fn leak(threads: usize) -> &'static Pool {
        Box::leak(Box::new(Pool::new(threads)))
    }

    /// The number of CPUs this process may use (1 if unknown).
    pub fn available() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

std::thread_local! {
    /// Whether this thread is running a task of some pool's job. A task that starts another
    /// split product (model code splitting whole computations over the workers, then calling
    /// kernels that split again) must not wait for workers that are all busy with the outer
    /// job, nor for the `running` lock its own caller holds: `run` then runs inline.
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn claim_all(shared: &Shared, job: Job) {
    struct Leave(bool);
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_TASK.with(|f| f.set(self.0));
        }
    }
    let _leave = Leave(IN_TASK.with(|f| f.replace(true)));
    loop {
        let i = shared.next.fetch_add(1, Ordering::AcqRel);
        if i >= job.tasks {
            return;
        }
        // SAFETY: the job is still published or held (`holding` > 0 or we are the caller),
        // so `Pool::run` has not returned and the closure is alive.
        unsafe { (*job.task)(i) };
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut polls = 0;
        while shared.generation.load(Ordering::Acquire) == seen && polls < SPIN_POLLS {
            std::hint::spin_loop();
            polls += 1;
        }
        let job = {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            while shared.generation.load(Ordering::Acquire) == seen && !state.shutdown {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.shutdown {
                return;
            }
            seen = shared.generation.load(Ordering::Acquire);
            // Taking the job under the lock: `run` withdraws it under the same lock, then
            // waits for `holding` to drop to zero before its closure goes away.
            let job = state.job;
            if job.is_some() {
                shared.holding.fetch_add(1, Ordering::AcqRel);
            }
            job
        };
        let Some(job) = job else { continue };
        struct Release<'a>(&'a Shared);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.panicked.store(true, Ordering::Release);
                }
                self.0.holding.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _release = Release(shared);
        claim_all(shared, job);
    }
}

// SAFETY: `run` calls each index exactly once (indices are claimed with one atomic counter)
// and returns only after every worker that took the job has let go of it (`holding` = 0), so
// no call outlives `run`.
unsafe impl Parallel for Pool {
    fn workers(&self) -> usize {
        self.threads.len() + 1
    }

    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if self.threads.is_empty() || tasks <= 1 || IN_TASK.with(|f| f.get()) {
            (0..tasks).for_each(task);
            return;
        }
        let _one_job = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: only the lifetime is erased; the pointer is withdrawn and every holder has
        // let go before this function returns (below).
        let erased: *const (dyn Fn(usize) + Sync + 'static) =
            unsafe { std::mem::transmute(task as *const (dyn Fn(usize) + Sync + '_)) };
        let job = Job {
            task: erased,
            tasks,
        };
        let shared = &*self.shared;
        {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            shared.next.store(0, Ordering::Release);
            state.job = Some(job);
            shared.generation.fetch_add(1, Ordering::AcqRel);
        }
        shared.wake.notify_all();
        {
            // Withdraws the job and waits for its holders even if a task panics here.
            let _withdraw = Withdraw(shared);
            claim_all(shared, job);
        }
        if shared.panicked.swap(false, Ordering::AcqRel) {
            panic!("a kernel task panicked on a worker thread");
        }
    }
}

/// Withdraws the published job, then waits until no worker still runs one of its tasks.
struct Withdraw<'a>(&'a Shared);

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.0
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .job = None;
        // Every index is claimed (or the caller is unwinding); wait for the workers still
        // running one.
        while self.0.holding.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .shutdown = true;
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_exactly_once() {
        let pool = Pool::new(3);
        for tasks in [0usize, 1, 2, 3, 7, 100] {
            let counts: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
            pool.run(tasks, &|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn many_back_to_back_jobs_and_shared_use() {
        let pool = Arc::new(Pool::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    for round in 0..2000usize {
                        let sum = AtomicUsize::new(0);
                        pool.run(4, &|i| {
                            sum.fetch_add(i + round, Ordering::Relaxed);
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), 6 + 4 * round);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    /// A task that runs a job of its own (nested splitting) completes instead of waiting for
    /// workers busy with the outer job; every inner and outer task runs once.
    #[test]
    fn nested_jobs_run_inline() {
        let pool = Pool::new(2);
        let counts: Vec<AtomicU32> = (0..4 * 5).map(|_| AtomicU32::new(0)).collect();
        pool.run(4, &|i| {
            pool.run(5, &|j| {
                counts[i * 5 + j].fetch_add(1, Ordering::Relaxed);
            });
        });
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        // The caller's flag is cleared afterwards, so its next job is split again.
        assert!(!IN_TASK.with(|f| f.get()));
    }

    /// The pattern that hung Toto's threaded sampling: parts on the workers, each running a
    /// product large enough for the same kernels to split it over the same pool.
    #[test]
    fn split_products_inside_parts_complete() {
        use goldcrest_core::kernels::{Kernels, PARALLEL_MIN_WEIGHTS};
        use goldcrest_core::quant::{Format, Matrix};
        let kernels = Kernels::scalar().with_parallel(Pool::leak(2));
        let (rows, cols, tokens) = (512usize, 512usize, 8usize);
        assert!(rows * cols >= PARALLEL_MIN_WEIGHTS);
        let weights = vec![1.0f32; rows * cols];
        let w = Matrix::new("w", Format::F32, rows, cols, bytemuck::cast_slice(&weights)).unwrap();
        let x = vec![0.5f32; tokens * cols];
        let mut parts = vec![vec![0.0f32; tokens * rows]; 4];
        kernels.for_each_mut(&mut parts, &|y| kernels.gemm(&w, &x, tokens, y).unwrap());
        let want = 0.5 * cols as f32;
        assert!(parts.iter().flatten().all(|&v| v == want));
    }

    #[test]
    fn one_thread_pool_runs_inline() {
        let pool = Pool::new(1);
        assert_eq!(pool.workers(), 1);
        let hits = AtomicUsize::new(0);
        pool.run(5, &|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 5);
    }
}
