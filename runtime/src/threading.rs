//! The thread-count setting and the thread pool that the kernels share.
//!
//! The number of threads comes from, in order: the last `set_num_threads(n)` with `n > 0`, the
//! `NNC_NUM_THREADS` environment variable (read once, at first use), and the number of cores.
//! With one thread, kernels run inline on the calling thread and no pool exists.
//!
//! The pool is ours, not rayon's, because a network is hundreds of short kernel calls in a row
//! (MobileNetV2's layers take 20–300 µs; a decode step is ~200 one-token projections of 20–100
//! µs each), so what a parallel call costs to start and to finish matters as much as how it
//! splits. `n` threads are the calling thread plus `n - 1` workers. A call cuts its tasks into
//! `n` consecutive home ranges, one per thread (the caller's first), publishes them with a new
//! generation number, and every thread works through its own range from the front, then steals
//! from the back of the others'; the caller waits for the last task by spinning. Between jobs a
//! worker spins for [`SPIN_DURATION`] before it sleeps on a condition variable, so a network's
//! back-to-back calls never pay for waking a thread, and an idle process does not burn a core.
//!
//! Home ranges keep data on the core that made it: kernels number their tasks in memory order
//! (rows of an image, panels of a product), so thread `t` of one layer writes roughly the part of
//! the activation that thread `t` of the next layer reads, and it is still in that core's cache.
//! When tasks went to whichever thread claimed first, half of each layer's input came from the
//! other core's cache, and MobileNetV2's depthwise layers ran no faster on two threads than on
//! one.
//!
//! A call made while the pool is busy (from inside a task, or from a second thread running
//! another network) runs inline on its own thread instead of waiting for the pool.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sets the number of threads the kernels may use; `0` restores the default (the
/// `NNC_NUM_THREADS` environment variable, else every core).
pub fn set_num_threads(num_threads: usize) {
    REQUESTED_THREADS.store(num_threads, Ordering::Relaxed);
    if let Ok(mut pool) = POOL.write()
        && pool
            .as_ref()
            .is_some_and(|pool| pool.threads() != num_threads_or_default())
    {
        // The old pool's workers stop once the last call still using it returns.
        *pool = None;
    }
}

/// The number of threads the kernels currently use.
pub fn num_threads() -> usize {
    num_threads_or_default()
}

/// How long an idle worker spins, watching for the next job, before it goes to sleep.
const SPIN_DURATION: Duration = Duration::from_millis(2);

static REQUESTED_THREADS: AtomicUsize = AtomicUsize::new(0);
static POOL: RwLock<Option<Arc<Pool>>> = RwLock::new(None);

thread_local! {
    /// Whether this thread is running a task of the pool (always, on a worker); a parallel call
    /// from such a thread runs inline.
    static INSIDE_POOL: Cell<bool> = const { Cell::new(false) };
}

fn num_threads_or_default() -> usize {
    match REQUESTED_THREADS.load(Ordering::Relaxed) {
        0 => default_num_threads(),
        requested => requested,
    }
}

fn default_num_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        let from_environment = num_threads_from_env().unwrap_or_else(|error| {
            // Kernels cannot return this error; programs that want it as an error call
            // `num_threads_from_env` first, as `nnc` does.
            eprintln!("warning: {error}; using every core");
            None
        });
        from_environment.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|cores| cores.get())
                .unwrap_or(1)
        })
    })
}

/// The thread count `NNC_NUM_THREADS` asks for: `None` when it is not set, an error naming the
/// value when it is not a positive integer (`0`, `-1`, `four`). The kernels fall back to every
/// core, with a warning, on such a value; a program calls this first to refuse it instead.
pub fn num_threads_from_env() -> Result<Option<usize>, String> {
    let Some(value) = std::env::var_os("NNC_NUM_THREADS") else {
        return Ok(None);
    };
    let value = value.to_string_lossy();
    match value.trim().parse::<usize>() {
        Ok(threads) if threads > 0 => Ok(Some(threads)),
        _ => Err(format!(
            "NNC_NUM_THREADS={value:?} is not a positive number of threads"
        )),
    }
}

/// Returns the shared pool, building it if needed, or `None` when kernels should run inline
/// (one thread, or the pool's threads could not be started).
fn shared_pool() -> Option<Arc<Pool>> {
    let wanted = num_threads_or_default();
    if wanted <= 1 {
        return None;
    }
    if let Ok(pool) = POOL.read()
        && let Some(pool) = pool.as_ref()
        && pool.threads() == wanted
    {
        return Some(Arc::clone(pool));
    }
    let mut slot = POOL.write().ok()?;
    if let Some(pool) = slot.as_ref()
        && pool.threads() == wanted
    {
        return Some(Arc::clone(pool));
    }
    let pool = Arc::new(Pool::start(wanted - 1)?);
    *slot = Some(Arc::clone(&pool));
    Some(pool)
}

/// Runs `task(index)` for every index in `0..task_count`, on the pool when it has more than one
/// thread and there is more than one task, else inline in order. Returns when every task has
/// finished; a panic in a task panics the caller.
pub(crate) fn run_tasks(task_count: usize, task: impl Fn(usize) + Sync) {
    if task_count == 0 {
        return;
    }
    if task_count > 1
        && u32::try_from(task_count).is_ok()
        && !INSIDE_POOL.with(Cell::get)
        && let Some(pool) = shared_pool()
        && pool.run(task_count, &task)
    {
        return;
    }
    (0..task_count).for_each(task);
}

/// Splits `output` into consecutive chunks of `chunk_length` elements (the last may be shorter)
/// and runs `task(chunk_index, chunk)` on each, in parallel when the pool allows.
pub(crate) fn run_chunks_mut<T: Send>(
    output: &mut [T],
    chunk_length: usize,
    task: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunk_length = chunk_length.max(1);
    let length = output.len();
    let chunk_count = length.div_ceil(chunk_length);
    if chunk_count <= 1 {
        if length > 0 {
            task(0, output);
        }
        return;
    }
    let base = SharedSlice(output.as_mut_ptr());
    run_tasks(chunk_count, |chunk_index| {
        let start = chunk_index * chunk_length;
        let end = (start + chunk_length).min(length);
        // SAFETY: `start..end` lies inside `output` (`chunk_index < chunk_count`), the chunks of
        // different indices are disjoint and each index runs once, and `output` stays mutably
        // borrowed until `run_tasks` returns, after every task has finished.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
        task(chunk_index, chunk);
    });
}

/// Splits `output` into chunks of `chunk_length` elements as [`run_chunks_mut`] does, and
/// `scratch` into as many chunks of `scratch_length` elements, and runs
/// `task(chunk_index, chunk, scratch_chunk)` on each pair, in parallel when the pool allows: for
/// kernels whose tasks each need a buffer of their own.
///
/// # Panics
/// If `scratch` is shorter than one `scratch_length` per chunk of `output`.
pub(crate) fn run_chunks_with_scratch_mut<T: Send, U: Send>(
    output: &mut [T],
    chunk_length: usize,
    scratch: &mut [U],
    scratch_length: usize,
    task: impl Fn(usize, &mut [T], &mut [U]) + Sync,
) {
    let chunk_count = output.len().div_ceil(chunk_length.max(1));
    assert!(
        scratch.len() >= chunk_count * scratch_length,
        "run_chunks_with_scratch_mut: {} elements of scratch for {chunk_count} chunks of {scratch_length}",
        scratch.len()
    );
    let scratch = SharedSlice(scratch.as_mut_ptr());
    run_chunks_mut(output, chunk_length, |chunk_index, chunk| {
        // SAFETY: `chunk_index < chunk_count`, so the range lies inside `scratch` (checked
        // above); the ranges of different indices are disjoint and `run_chunks_mut` runs each
        // index once, and `scratch` stays mutably borrowed until it returns.
        let scratch = unsafe {
            std::slice::from_raw_parts_mut(
                scratch.get().add(chunk_index * scratch_length),
                scratch_length,
            )
        };
        task(chunk_index, chunk, scratch);
    });
}

/// The first error of tasks run in parallel, kept until they have all finished: a task that
/// fails records its error and returns, the others run on, and the caller returns the error.
pub(crate) struct FirstError<E>(Mutex<Option<E>>);

impl<E> FirstError<E> {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// Keeps `result`'s error unless one was kept before.
    pub(crate) fn record(&self, result: Result<(), E>) {
        if let Err(error) = result
            && let Ok(mut first) = self.0.lock()
        {
            first.get_or_insert(error);
        }
    }

    /// The error kept, if any, once the tasks are done.
    pub(crate) fn into_result(self) -> Result<(), E> {
        match self.0.into_inner() {
            Ok(Some(error)) => Err(error),
            _ => Ok(()),
        }
    }
}

/// The number of threads that parallel kernels will use, for sizing their task lists.
pub(crate) fn parallel_width() -> usize {
    num_threads_or_default().max(1)
}

/// How many of `rows` equal rows of `row_length` elements one task should take: at most about
/// `target_elements` per task (at least one row), and among those sizes the one that finishes
/// soonest on [`parallel_width`] threads when tasks go out in rounds (ties to bigger tasks).
///
/// Cutting by size alone can leave a thread idle for most of a round: 14 rows two to a task are
/// 7 tasks, 4 rounds of 2 rows on two threads where one row per task finishes in 7 rows.
pub(crate) fn balanced_rows_per_task(
    rows: usize,
    row_length: usize,
    target_elements: usize,
) -> usize {
    balanced_rows_per_task_on(rows, row_length, target_elements, parallel_width())
}

/// [`balanced_rows_per_task`] on `threads` threads.
fn balanced_rows_per_task_on(
    rows: usize,
    row_length: usize,
    target_elements: usize,
    threads: usize,
) -> usize {
    let by_size = rows_by_size(rows, row_length, target_elements);
    if threads <= 1 {
        return by_size;
    }
    let finish = |rows_per_task: usize| finish_in_rounds(rows, rows_per_task, threads);
    // Only the smallest size for each count of tasks can be best (a larger size with as many
    // tasks takes as many rounds of longer tasks), and those are the distinct values of
    // `ceil(rows / tasks)`: about `2 sqrt(rows)` of them, where trying every size up to
    // `by_size` cost tens of thousands of divisions for a layer of many short rows.
    let mut best = by_size;
    let mut tasks = 1;
    while tasks <= rows {
        let rows_per_task = rows.div_ceil(tasks);
        if rows_per_task <= by_size
            && (finish(rows_per_task), std::cmp::Reverse(rows_per_task))
                < (finish(best), std::cmp::Reverse(best))
        {
            best = rows_per_task;
        }
        if rows_per_task == 1 {
            break;
        }
        // The fewest tasks whose size is smaller.
        tasks = rows.div_ceil(rows_per_task - 1);
    }
    best
}

/// Rows per task by size alone: about `target_elements`, at least one row and at most all.
fn rows_by_size(rows: usize, row_length: usize, target_elements: usize) -> usize {
    (target_elements / row_length.max(1)).clamp(1, rows.max(1))
}

/// When tasks of `rows_per_task` rows finish, in rows, when they go out in rounds of `threads`.
fn finish_in_rounds(rows: usize, rows_per_task: usize, threads: usize) -> usize {
    rows.div_ceil(rows_per_task).div_ceil(threads) * rows_per_task
}

/// A pointer to the first element of a slice whose disjoint chunks tasks write.
struct SharedSlice<T>(*mut T);

impl<T> SharedSlice<T> {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: The tasks of `run_chunks_mut` and `run_chunks_with_scratch_mut` write disjoint chunks
// through this pointer, and the slice's elements are `Send`.
unsafe impl<T: Send> Sync for SharedSlice<T> {}

/// A task of the current job, with its lifetime erased; see `Pool::run` for why it stays valid.
type TaskPointer = *const (dyn Fn(usize) + Sync + 'static);

/// The job a generation runs.
struct JobSlot {
    generation: u32,
    task: Option<TaskPointer>,
    task_count: usize,
}

// SAFETY: The task behind the pointer is `Sync`, so calling it from any thread is allowed; the
// slot only moves the pointer between threads under its mutex.
unsafe impl Send for JobSlot {}

/// What the calling thread and the workers share.
struct Shared {
    /// The generation of the current job; workers watch it for a new one.
    generation: AtomicU32,
    /// Per thread (the caller first), its home range of the current job's units as
    /// [`RangeWord`]s; every claim is tagged with the generation, so a worker late from an older
    /// job can never claim a unit of a newer one.
    ranges: Box<[CachePadded<AtomicU64>]>,
    /// The task and the number of tasks of the current generation.
    job: Mutex<JobSlot>,
    /// Units of the current job not yet finished.
    unfinished: AtomicUsize,
    /// Whether a task of the current job panicked.
    panicked: AtomicBool,
    /// Workers asleep (or about to sleep) on `wake`.
    sleeping: AtomicUsize,
    wake_lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Whether a call is using the pool; a second concurrent call runs inline.
    busy: AtomicBool,
}

impl Pool {
    /// Starts `worker_count` workers, or returns `None` if a thread could not be spawned.
    fn start(worker_count: usize) -> Option<Self> {
        let shared = Arc::new(Shared {
            generation: AtomicU32::new(0),
            ranges: (0..=worker_count)
                .map(|_| CachePadded(AtomicU64::new(0)))
                .collect(),
            job: Mutex::new(JobSlot {
                generation: 0,
                task: None,
                task_count: 0,
            }),
            unfinished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let mut pool = Pool {
            shared: Arc::clone(&shared),
            workers: Vec::with_capacity(worker_count),
            busy: AtomicBool::new(false),
        };
        for index in 0..worker_count {
            let shared = Arc::clone(&shared);
            let worker = std::thread::Builder::new()
                .name(format!("nnc-runtime-{index}"))
                .spawn(move || worker_loop(&shared, index + 1))
                .ok()?;
            // A pool dropped here, on a failed spawn, stops the workers already started.
            pool.workers.push(worker);
        }
        Some(pool)
    }

    /// The number of threads a job runs on: the workers and the caller.
    fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs the job on the pool and returns `true`, or returns `false` without running anything
    /// if the pool is busy with another call.
    fn run(&self, task_count: usize, task: &(dyn Fn(usize) + Sync)) -> bool {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let shared = &*self.shared;
        // SAFETY: Only the lifetime is erased. The pointer is called only by whoever claims a
        // task of this generation, a claim succeeds only while a task of it is unclaimed, and
        // this function returns only after `unfinished` reaches zero, that is after every
        // claimed task has returned; later generations replace the pointer before anyone can
        // claim their tasks. So `task` is never called after this borrow ends.
        let erased: TaskPointer =
            unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), TaskPointer>(task) };
        let generation = shared.generation.load(Ordering::Relaxed).wrapping_add(1);
        let units = Units::of(task_count);
        {
            let mut job = shared
                .job
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            *job = JobSlot {
                generation,
                task: Some(erased),
                task_count,
            };
        }
        shared.unfinished.store(units.count, Ordering::Relaxed);
        let threads = shared.ranges.len();
        for (thread, range) in shared.ranges.iter().enumerate() {
            let home = units.count * thread / threads..units.count * (thread + 1) / threads;
            range
                .0
                .store(RangeWord::pack(generation, home), Ordering::Relaxed);
        }
        // Publishes the ranges with the generation: a worker that sees the new generation sees
        // them too.
        shared.generation.store(generation, Ordering::SeqCst);
        if shared.sleeping.load(Ordering::SeqCst) > 0 {
            let _guard = shared
                .wake_lock
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            shared.wake.notify_all();
        }
        INSIDE_POOL.with(|inside| inside.set(true));
        claim_and_run(shared, 0, generation, erased, task_count);
        INSIDE_POOL.with(|inside| inside.set(false));
        let mut spins = 0u32;
        while shared.unfinished.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                // A worker that lost its core (a loaded machine) gets it back sooner.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        self.busy.store(false, Ordering::Release);
        if shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a parallel kernel task panicked");
        }
        true
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = self
                .shared
                .wake_lock
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            self.shared.wake.notify_all();
        }
        for worker in self.workers.drain(..) {
            // A worker never panics (tasks run under `catch_unwind`); nothing to report.
            let _ = worker.join();
        }
    }
}

/// How a job's tasks are grouped into the units that threads claim: a range word counts units
/// in 16 bits, so a job of more tasks claims several consecutive tasks at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Units {
    /// Tasks per unit.
    size: usize,
    count: usize,
}

impl Units {
    fn of(task_count: usize) -> Self {
        let size = task_count.div_ceil(RangeWord::MAX_UNITS).max(1);
        Units {
            size,
            count: task_count.div_ceil(size),
        }
    }

    /// The tasks of unit `unit`.
    fn tasks(self, unit: usize, task_count: usize) -> std::ops::Range<usize> {
        unit * self.size..((unit + 1) * self.size).min(task_count)
    }
}

/// A thread's home range of units, `generation << 32 | next << 16 | end`: its owner claims
/// `next` from the front, other threads steal `end - 1` from the back.
struct RangeWord;

impl RangeWord {
    const MAX_UNITS: usize = u16::MAX as usize;

    fn pack(generation: u32, units: std::ops::Range<usize>) -> u64 {
        debug_assert!(units.start <= units.end && units.end <= Self::MAX_UNITS);
        u64::from(generation) << 32 | (units.start as u64) << 16 | units.end as u64
    }

    /// The unclaimed units of `word` if it belongs to `generation`.
    fn unclaimed(word: u64, generation: u32) -> std::ops::Range<usize> {
        if (word >> 32) as u32 != generation {
            return 0..0;
        }
        ((word >> 16) & 0xffff) as usize..(word & 0xffff) as usize
    }
}

/// Claims one unit of `generation` from `range`, from the front (its owner) or the back (a
/// thief); `None` once the range has none left.
fn claim_unit(range: &AtomicU64, generation: u32, from_front: bool) -> Option<usize> {
    let mut word = range.load(Ordering::Acquire);
    loop {
        let unclaimed = RangeWord::unclaimed(word, generation);
        if unclaimed.is_empty() {
            return None;
        }
        let (unit, rest) = if from_front {
            (unclaimed.start, unclaimed.start + 1..unclaimed.end)
        } else {
            (unclaimed.end - 1, unclaimed.start..unclaimed.end - 1)
        };
        match range.compare_exchange_weak(
            word,
            RangeWord::pack(generation, rest),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Some(unit),
            Err(current) => word = current,
        }
    }
}

/// Runs units of `generation` until none is left: thread `thread`'s home range from the front,
/// then the other threads' ranges from the back, the next thread's first.
fn claim_and_run(
    shared: &Shared,
    thread: usize,
    generation: u32,
    task: TaskPointer,
    task_count: usize,
) {
    let units = Units::of(task_count);
    let threads = shared.ranges.len();
    let run_unit = |unit: usize| {
        let run = |index| {
            // SAFETY: This thread claimed the unit of `generation` that holds task `index`, so
            // the job is not finished and its caller is still waiting in `Pool::run`, which
            // keeps `task` alive.
            unsafe { (*task)(index) }
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            units.tasks(unit, task_count).for_each(run);
        }));
        if outcome.is_err() {
            shared.panicked.store(true, Ordering::Relaxed);
        }
        shared.unfinished.fetch_sub(1, Ordering::Release);
    };
    while let Some(unit) = claim_unit(&shared.ranges[thread].0, generation, true) {
        run_unit(unit);
    }
    for victim in (1..threads).map(|offset| (thread + offset) % threads) {
        while let Some(unit) = claim_unit(&shared.ranges[victim].0, generation, false) {
            run_unit(unit);
        }
    }
}

/// Keeps a value on a cache line of its own (two, as adjacent-line prefetch pairs them), so
/// threads claiming from different ranges do not contend for one line.
#[repr(align(128))]
struct CachePadded<T>(T);

/// A worker: waits for each new generation, then claims its tasks.
fn worker_loop(shared: &Shared, thread: usize) {
    INSIDE_POOL.with(|inside| inside.set(true));
    let mut seen = 0u32;
    loop {
        let Some(generation) = wait_for_job(shared, seen) else {
            return;
        };
        seen = generation;
        // The slot may already hold a newer job than the one seen; its own generation goes with
        // its task, so a claim is only ever made for the task it belongs to.
        let (job_generation, task, task_count) = {
            let job = shared
                .job
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            (job.generation, job.task, job.task_count)
        };
        if let Some(task) = task {
            claim_and_run(shared, thread, job_generation, task, task_count);
        }
    }
}

/// Spins, then sleeps, until the generation differs from `seen`; `None` on shutdown.
fn wait_for_job(shared: &Shared, seen: u32) -> Option<u32> {
    let current = || shared.generation.load(Ordering::SeqCst);
    let mut spin_start = Instant::now();
    let mut spins = 0u32;
    loop {
        if shared.shutdown.load(Ordering::Relaxed) {
            return None;
        }
        let generation = current();
        if generation != seen {
            return Some(generation);
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(256) || spin_start.elapsed() < SPIN_DURATION {
            std::hint::spin_loop();
            continue;
        }
        let guard = shared
            .wake_lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        shared.sleeping.fetch_add(1, Ordering::SeqCst);
        // Checked again after announcing the sleep: a caller that published before this check
        // is seen here; one that publishes after it sees `sleeping` and notifies under the lock,
        // which this thread releases only inside `wait`.
        let guard = if current() == seen && !shared.shutdown.load(Ordering::SeqCst) {
            shared
                .wake
                .wait(guard)
                .unwrap_or_else(|poison| poison.into_inner())
        } else {
            guard
        };
        shared.sleeping.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        spin_start = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn thread_count_setting_round_trips_and_tasks_all_run() {
        let _guard = crate::test_support::lock_thread_count();
        for threads in [1, 2, 3] {
            set_num_threads(threads);
            assert_eq!(num_threads(), threads);
            let total = AtomicUsize::new(0);
            run_tasks(10, |task| {
                total.fetch_add(task + 1, Ordering::Relaxed);
            });
            assert_eq!(total.into_inner(), 55);
            let mut values = vec![0usize; 1000];
            run_chunks_mut(&mut values, 64, |chunk_index, chunk| {
                for (offset, value) in chunk.iter_mut().enumerate() {
                    *value = chunk_index * 64 + offset;
                }
            });
            assert!(
                values
                    .iter()
                    .enumerate()
                    .all(|(index, &value)| index == value)
            );
        }
        set_num_threads(0);
        assert!(num_threads() >= 1);
    }

    /// Each chunk, the last one short included, gets its own slice of the scratch, of the length
    /// asked for, whatever is left over at the scratch's end.
    #[test]
    fn chunks_with_scratch_get_disjoint_scratch() {
        let _guard = crate::test_support::lock_thread_count();
        for threads in [1, 2, 3] {
            set_num_threads(threads);
            let mut values = vec![0usize; 10];
            let mut scratch = vec![usize::MAX; 4 * 3 + 1];
            run_chunks_with_scratch_mut(&mut values, 3, &mut scratch, 3, |index, chunk, own| {
                assert_eq!(own.len(), 3);
                assert!(own.iter().all(|&value| value == usize::MAX));
                own.fill(index);
                for value in chunk.iter_mut() {
                    *value = index;
                }
            });
            assert_eq!(values, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]);
            assert_eq!(scratch, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, usize::MAX]);
        }
        set_num_threads(0);
    }

    #[test]
    #[should_panic(expected = "elements of scratch")]
    fn chunks_with_too_little_scratch_panic_before_any_task_runs() {
        let mut values = vec![0.0f32; 10];
        let mut scratch = vec![0.0f32; 11];
        run_chunks_with_scratch_mut(&mut values, 3, &mut scratch, 3, |_, _, _| {
            unreachable!("no task runs")
        });
    }

    /// The reference twin: every size from 1 to the size by the target.
    fn balanced_rows_by_trying_every_size(
        rows: usize,
        row_length: usize,
        target_elements: usize,
        threads: usize,
    ) -> usize {
        let by_size = rows_by_size(rows, row_length, target_elements);
        if threads <= 1 {
            return by_size;
        }
        (1..=by_size)
            .min_by_key(|&size| {
                (
                    finish_in_rounds(rows, size, threads),
                    std::cmp::Reverse(size),
                )
            })
            .unwrap_or(1)
    }

    #[test]
    fn balanced_rows_equal_trying_every_size() {
        for rows in (0..300).chain([1000, 4096, 12544, 50176, 50177]) {
            for row_length in [1, 3, 4, 7, 100, 5000, 20000] {
                for threads in 1..6 {
                    for target in [1 << 14, 1 << 16] {
                        assert_eq!(
                            balanced_rows_per_task_on(rows, row_length, target, threads),
                            balanced_rows_by_trying_every_size(rows, row_length, target, threads),
                            "{rows} rows of {row_length}, target {target}, {threads} threads"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn balanced_rows_keep_every_thread_busy_and_tasks_near_the_target() {
        // 14 rows of 8064 (MobileNetV2's 14x14x576 depthwise), about 16 Ki elements a task: two
        // rows a task would be 7 tasks, 4 rounds on two threads; one row a task is 7 rounds of 1.
        assert_eq!(balanced_rows_per_task_on(14, 8064, 1 << 14, 2), 1);
        // 7 rows: 2 a task (4 tasks, 2 rounds) finish as soon as 1 a task, in fewer tasks.
        assert_eq!(balanced_rows_per_task_on(7, 6720, 1 << 14, 2), 2);
        // One thread: by size only.
        assert_eq!(balanced_rows_per_task_on(14, 8064, 1 << 14, 1), 2);
        for rows in 1..40 {
            for row_length in [1, 7, 100, 5000, 20000] {
                for threads in 1..5 {
                    let chosen = balanced_rows_per_task_on(rows, row_length, 1 << 14, threads);
                    let by_size = ((1 << 14) / row_length).clamp(1, rows);
                    assert!(
                        (1..=by_size).contains(&chosen),
                        "{rows} {row_length} {threads}"
                    );
                    let finish = |per_task: usize| finish_in_rounds(rows, per_task, threads);
                    assert!(
                        finish(chosen) <= finish(by_size),
                        "{rows} {row_length} {threads}"
                    );
                }
            }
        }
    }

    #[test]
    fn many_jobs_in_a_row_each_run_every_task_once() {
        let _guard = crate::test_support::lock_thread_count();
        set_num_threads(3);
        for job in 0..2000usize {
            let task_count = 1 + job % 7;
            let counts: Vec<AtomicUsize> = (0..task_count).map(|_| AtomicUsize::new(0)).collect();
            run_tasks(task_count, |task| {
                counts[task].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                counts
                    .iter()
                    .all(|count| count.load(Ordering::Relaxed) == 1)
            );
        }
        set_num_threads(0);
    }

    #[test]
    fn owners_claim_from_the_front_thieves_from_the_back_within_their_generation() {
        let range = AtomicU64::new(RangeWord::pack(7, 3..7));
        assert_eq!(claim_unit(&range, 7, true), Some(3));
        assert_eq!(claim_unit(&range, 7, false), Some(6));
        // A thread late from another generation claims nothing and changes nothing.
        assert_eq!(claim_unit(&range, 6, true), None);
        assert_eq!(claim_unit(&range, 8, false), None);
        assert_eq!(claim_unit(&range, 7, true), Some(4));
        assert_eq!(claim_unit(&range, 7, true), Some(5));
        assert_eq!(claim_unit(&range, 7, false), None);
        assert_eq!(claim_unit(&range, 7, true), None);
        let full = AtomicU64::new(RangeWord::pack(u32::MAX, 0..RangeWord::MAX_UNITS));
        assert_eq!(
            claim_unit(&full, u32::MAX, false),
            Some(RangeWord::MAX_UNITS - 1)
        );
        assert_eq!(claim_unit(&full, u32::MAX, true), Some(0));
    }

    #[test]
    fn units_cover_every_task_once_and_fit_a_range_word() {
        for task_count in [1, 2, 65_534, 65_535, 65_536, 131_071, 200_003, 1 << 24] {
            let units = Units::of(task_count);
            assert!(units.count <= RangeWord::MAX_UNITS, "{task_count}");
            let mut next = 0;
            for unit in 0..units.count {
                let tasks = units.tasks(unit, task_count);
                assert_eq!(tasks.start, next, "{task_count}");
                assert!(!tasks.is_empty(), "{task_count}");
                next = tasks.end;
            }
            assert_eq!(next, task_count);
        }
    }

    #[test]
    fn jobs_of_more_tasks_than_a_range_word_counts_run_each_task_once() {
        let _guard = crate::test_support::lock_thread_count();
        for threads in [2, 3] {
            set_num_threads(threads);
            for task_count in [3, 65_535, 65_536, 200_003] {
                let counts: Vec<AtomicUsize> =
                    (0..task_count).map(|_| AtomicUsize::new(0)).collect();
                run_tasks(task_count, |task| {
                    counts[task].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    counts
                        .iter()
                        .all(|count| count.load(Ordering::Relaxed) == 1),
                    "{task_count} tasks on {threads} threads"
                );
            }
        }
        set_num_threads(0);
    }

    #[test]
    fn nested_and_concurrent_calls_run_inline_and_finish() {
        let _guard = crate::test_support::lock_thread_count();
        set_num_threads(2);
        let total = AtomicUsize::new(0);
        run_tasks(4, |_| {
            // Inside a task: the pool is busy, so this runs inline on the same thread.
            run_tasks(3, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 12);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        run_tasks(5, |_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 12 + 3 * 200 * 5);
        set_num_threads(0);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_pool_still_works() {
        let _guard = crate::test_support::lock_thread_count();
        set_num_threads(2);
        let outcome = catch_unwind(|| {
            run_tasks(8, |task| {
                assert_ne!(task, 5, "task 5 fails on purpose");
            })
        });
        assert!(outcome.is_err());
        let total = AtomicUsize::new(0);
        run_tasks(8, |task| {
            total.fetch_add(task, Ordering::Relaxed);
        });
        assert_eq!(total.into_inner(), 28);
        set_num_threads(0);
    }

    /// The tasks that fail do not stop the others, and the caller gets one of their errors.
    #[test]
    fn first_error_keeps_one_failing_task_and_lets_the_rest_run() {
        let _guard = crate::test_support::lock_thread_count();
        for threads in [1, 2, 3] {
            set_num_threads(threads);
            let ran = AtomicUsize::new(0);
            let failure = FirstError::new();
            run_tasks(9, |task| {
                ran.fetch_add(1, Ordering::Relaxed);
                failure.record(if task % 4 == 1 { Err(task) } else { Ok(()) });
            });
            assert_eq!(ran.into_inner(), 9);
            let error = failure.into_result().expect_err("tasks 1 and 5 failed");
            assert!(error == 1 || error == 5, "{error}");
            if threads == 1 {
                assert_eq!(error, 1, "in order, the first failure is kept");
            }
            let none = FirstError::<usize>::new();
            run_tasks(4, |_| none.record(Ok(())));
            assert_eq!(none.into_result(), Ok(()));
        }
        set_num_threads(0);
    }
}
