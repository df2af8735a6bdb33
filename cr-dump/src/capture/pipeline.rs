//! An ordered worker pipeline, knowing nothing of what its jobs are.
//!
//! A producer thread cuts the work into jobs, numbered in order, and hands them over in
//! batches (a producer woken for every job competes with the workers for the CPUs). Each worker
//! takes the next job, does the work that can run in parallel (`work`: for an image stream,
//! read and plan a chunk of pages), then waits for its turn and does the part that must happen
//! in order (`commit`: write the records) itself, under a lock on the shared sink. Handing the
//! result to a committing thread instead would move the bytes to another core's cache, and on
//! two CPUs a third busy thread costs more than it gives (BENCHMARKS.md).
//!
//! Waiting for the turn: a worker spins for up to `Config::spin` on mirrors of the state under
//! the lock (the next job to commit, whether the pipeline stopped), then sleeps on a condition
//! variable. A commit takes about 0.2 ms, and sleeping and waking on every turn cost a fifth of
//! a stream's time. But on a busy machine the turn's holder is often not running, and a
//! spinning worker only takes its CPU (half of a checkpoint's samples with two busy loops
//! besides, BENCHMARKS.md): a worker whose spin fails sleeps for its next 1, 2, 4, ... 64 turns
//! without spinning, and spins again after a spin that succeeds.
//!
//! Failure: the first error, from the producer, a job's work or its commit, is reported in job
//! order and stops every worker; a worker that panics stops the others too (`StopOnPanic`:
//! they would wait for its turn forever); and the number of jobs committed is checked against
//! the number produced, so a hole is never taken for a complete output.

use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How a pipeline runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// Worker threads.
    pub workers: usize,
    /// Jobs handed over at a time.
    pub batch: usize,
    /// How long a worker spins for its turn before it sleeps (on two CPUs or more).
    pub spin: Duration,
    /// The error when a thread failed and the output has a hole.
    pub incomplete: &'static str,
}

type Batch<J> = Vec<(u64, Result<J>)>;

/// The producer's end: numbers jobs and hands them over in batches.
pub(crate) struct Feed<J> {
    tx: mpsc::SyncSender<Batch<J>>,
    batch: Batch<J>,
    size: usize,
    seq: u64,
}

impl<J> Feed<J> {
    /// Queues `job`. `false` once the workers have stopped: produce no more.
    pub fn push(&mut self, job: J) -> bool {
        self.batch.push((self.seq, Ok(job)));
        self.seq += 1;
        self.batch.len() < self.size || self.flush()
    }

    fn flush(&mut self) -> bool {
        let b = std::mem::take(&mut self.batch);
        b.is_empty() || self.tx.send(b).is_ok()
    }
}

/// The sink and the first error, under the pipeline's lock.
struct Turn<'s, S> {
    sink: &'s mut S,
    failed: Option<Error>,
}

/// What the workers share.
struct Shared<'s, S> {
    turn: Mutex<Turn<'s, S>>,
    cv: Condvar,
    /// The next job to commit (mirror of the state under the lock, for spinning).
    next: AtomicU64,
    /// Failed, or a worker panicked.
    stop: AtomicBool,
    spin: Option<Duration>,
}

impl<S> Shared<'_, S> {
    fn my_turn(&self, seq: u64) -> bool {
        self.next.load(Ordering::Acquire) == seq || self.stop.load(Ordering::Acquire)
    }
}

type Jobs<J> = Mutex<(mpsc::Receiver<Batch<J>>, VecDeque<(u64, Result<J>)>)>;

/// Runs the pipeline: `produce` feeds jobs; each of `cfg.workers` workers has its own state
/// from `local`, runs `work` on its jobs in parallel and `commit` on their results in job
/// order. Returns the workers' states.
pub(crate) fn run<J, L, O, S, P, I, W, C>(
    cfg: &Config,
    produce: P,
    local: I,
    work: W,
    sink: &mut S,
    commit: C,
) -> Result<Vec<L>>
where
    J: Send,
    L: Send,
    S: Send,
    P: FnOnce(&mut Feed<J>) -> Result<()> + Send,
    I: Fn() -> L + Sync,
    W: Fn(&mut L, J) -> Result<O> + Sync,
    C: Fn(&mut S, &L, O) -> Result<()> + Sync,
{
    let (tx, rx) = mpsc::sync_channel::<Batch<J>>(1);
    // Dropped with the last worker, which stops a producer blocked on a full channel.
    let jobs: Arc<Jobs<J>> = Arc::new(Mutex::new((rx, VecDeque::new())));
    let shared = Shared {
        turn: Mutex::new(Turn { sink, failed: None }),
        cv: Condvar::new(),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        spin: (std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2)
            .then_some(cfg.spin),
    };
    let producer = move || {
        let mut feed = Feed {
            tx,
            batch: Vec::with_capacity(cfg.batch),
            size: cfg.batch.max(1),
            seq: 0,
        };
        if let Err(e) = produce(&mut feed) {
            // Reported in sequence, after the jobs sent before it.
            feed.batch.push((feed.seq, Err(e)));
        }
        feed.flush();
        feed.seq
    };
    let (locals, produced, panicked) = std::thread::scope(|s| {
        let p = s.spawn(producer);
        let workers: Vec<_> = (0..cfg.workers)
            .map(|_| {
                let jobs = Arc::clone(&jobs);
                let (shared, local, work, commit) = (&shared, &local, &work, &commit);
                s.spawn(move || worker(shared, jobs, local, work, commit))
            })
            .collect();
        drop(jobs);
        let mut panicked = false;
        let mut locals = Vec::with_capacity(workers.len());
        for h in workers {
            match h.join() {
                Ok(l) => locals.push(l),
                Err(_) => panicked = true,
            }
        }
        (locals, p.join().ok(), panicked)
    });
    let next = shared.next.load(Ordering::Acquire);
    let t = shared
        .turn
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = t.failed {
        return Err(e);
    }
    // Every job produced must have been committed: a thread that panicked leaves a hole.
    if panicked || produced != Some(next) {
        return Err(Error::Other(cfg.incomplete.into()));
    }
    Ok(locals)
}

/// The next job, or `None` when there are no more.
fn next_job<J>(jobs: &Jobs<J>) -> Option<(u64, Result<J>)> {
    let mut g = jobs.lock().unwrap_or_else(PoisonError::into_inner);
    let (rx, queue) = &mut *g;
    if queue.is_empty() {
        if let Ok(b) = rx.recv() {
            queue.extend(b);
        }
    }
    queue.pop_front()
}

fn worker<J, L, O, S, I, W, C>(
    shared: &Shared<'_, S>,
    jobs: Arc<Jobs<J>>,
    local: &I,
    work: &W,
    commit: &C,
) -> L
where
    I: Fn() -> L,
    W: Fn(&mut L, J) -> Result<O>,
    C: Fn(&mut S, &L, O) -> Result<()>,
{
    let _stop_on_panic = StopOnPanic(shared);
    let mut l = local();
    // Turns to sleep for without spinning, and how many the next failed spin sets.
    let (mut skip, mut backoff) = (0u32, 1u32);
    loop {
        let Some((seq, job)) = next_job(&jobs) else {
            return l;
        };
        let out = job.and_then(|j| work(&mut l, j));
        if let Some(spin) = shared.spin {
            if skip == 0 {
                if spin_for_turn(shared, seq, spin) {
                    backoff = 1;
                } else {
                    // The turn's holder is not running (a busy machine): spinning only takes
                    // its CPU. Sleep for the next few turns, more of them each time it fails.
                    skip = backoff;
                    backoff = (backoff * 2).min(MAX_SKIP);
                }
            } else {
                skip -= 1;
            }
        }
        let mut t = shared.turn.lock().unwrap_or_else(PoisonError::into_inner);
        while !shared.my_turn(seq) {
            t = shared.cv.wait(t).unwrap_or_else(PoisonError::into_inner);
        }
        if shared.stop.load(Ordering::Acquire) {
            return l;
        }
        let done = out.and_then(|o| commit(t.sink, &l, o));
        // Under the lock: a worker about to sleep checks these under it too.
        match done {
            Ok(()) => shared.next.store(seq + 1, Ordering::Release),
            Err(e) => {
                t.failed = Some(e);
                shared.stop.store(true, Ordering::Release);
            }
        }
        shared.cv.notify_all();
    }
}

/// Most turns a worker sleeps for without spinning after a spin that failed.
const MAX_SKIP: u32 = 64;

/// Spins for up to `spin` until it is `seq`'s turn; `false` if it was not by then. The clock is
/// read every 64 rounds only (in a VM it cost more than the spinning), and the CPU is yielded
/// then, to whoever else is runnable: on a busy machine, maybe the turn's holder.
fn spin_for_turn<S>(shared: &Shared<'_, S>, seq: u64, spin: Duration) -> bool {
    let until = Instant::now() + spin;
    loop {
        for _ in 0..64 {
            if shared.my_turn(seq) {
                return true;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= until {
            return shared.my_turn(seq);
        }
        std::thread::yield_now();
    }
}

/// Stops a pipeline's workers when dropped during a panic.
struct StopOnPanic<'a, 's, S>(&'a Shared<'s, S>);

impl<S> Drop for StopOnPanic<'_, '_, S> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop.store(true, Ordering::Release);
            // Under the lock, so that no worker is between its check and its wait.
            let _g = self.0.turn.lock().unwrap_or_else(PoisonError::into_inner);
            self.0.cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: Config = Config {
        workers: 2,
        batch: 3,
        spin: Duration::from_millis(1),
        incomplete: "incomplete",
    };

    #[test]
    fn commits_in_order() {
        let mut out: Vec<u64> = Vec::new();
        let locals = run(
            &CFG,
            |f: &mut Feed<u64>| {
                for i in 0..100 {
                    if !f.push(i) {
                        break;
                    }
                }
                Ok(())
            },
            || 0u64,
            |n: &mut u64, j: u64| {
                *n += 1;
                Ok(j * 2)
            },
            &mut out,
            |o: &mut Vec<u64>, _: &u64, r: u64| {
                o.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(locals.iter().sum::<u64>(), 100);
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn the_first_error_in_order_wins() {
        let mut out: Vec<u64> = Vec::new();
        let r = run(
            &CFG,
            |f: &mut Feed<u64>| {
                for i in 0..50 {
                    f.push(i);
                }
                Err(Error::Other("producer".into()))
            },
            || (),
            |_: &mut (), j: u64| {
                if j == 20 {
                    Err(Error::Other("work 20".into()))
                } else {
                    Ok(j)
                }
            },
            &mut out,
            |o: &mut Vec<u64>, _: &(), r: u64| {
                o.push(r);
                Ok(())
            },
        );
        assert_eq!(r.unwrap_err().to_string(), "work 20");
        assert_eq!(out, (0..20).collect::<Vec<_>>());
    }
}
