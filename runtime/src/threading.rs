//! The thread-count setting and the rayon pool that the kernels share.
//!
//! The number of threads comes from, in order: the last `set_num_threads(n)` with `n > 0`, the
//! `NNC_NUM_THREADS` environment variable (read once, at first use), and the number of cores.
//! The pool is built lazily and rebuilt after the setting changes. With one thread, kernels run
//! inline on the calling thread and never touch rayon.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// Sets the number of threads the kernels may use; `0` restores the default (the
/// `NNC_NUM_THREADS` environment variable, else every core).
pub fn set_num_threads(num_threads: usize) {
    REQUESTED_THREADS.store(num_threads, Ordering::Relaxed);
    if let Ok(mut pool) = POOL.write() {
        // Dropping the old pool lets its threads finish; the next parallel kernel builds a new one.
        if pool
            .as_ref()
            .is_some_and(|pool| pool.current_num_threads() != num_threads_or_default())
        {
            *pool = None;
        }
    }
}

/// The number of threads the kernels currently use.
pub fn num_threads() -> usize {
    num_threads_or_default()
}

static REQUESTED_THREADS: AtomicUsize = AtomicUsize::new(0);
static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

fn num_threads_or_default() -> usize {
    match REQUESTED_THREADS.load(Ordering::Relaxed) {
        0 => default_num_threads(),
        requested => requested,
    }
}

fn default_num_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var("NNC_NUM_THREADS")
            .ok()
            .and_then(|value| value.trim().parse::<usize>().ok())
            .filter(|&threads| threads > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|cores| cores.get())
                    .unwrap_or(1)
            })
    })
}

/// Returns the shared pool, building it if needed, or `None` when kernels should run inline
/// (one thread, or the pool could not be built).
fn shared_pool() -> Option<Arc<rayon::ThreadPool>> {
    let wanted = num_threads_or_default();
    if wanted <= 1 {
        return None;
    }
    if let Ok(pool) = POOL.read()
        && let Some(pool) = pool.as_ref()
        && pool.current_num_threads() == wanted
    {
        return Some(Arc::clone(pool));
    }
    let mut slot = POOL.write().ok()?;
    if let Some(pool) = slot.as_ref()
        && pool.current_num_threads() == wanted
    {
        return Some(Arc::clone(pool));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(wanted)
        .thread_name(|index| format!("nnc-runtime-{index}"))
        .build()
        .ok()?;
    let pool = Arc::new(pool);
    *slot = Some(Arc::clone(&pool));
    Some(pool)
}

/// Runs `task(index)` for every index in `0..task_count`, on the shared pool when it has more
/// than one thread and there is more than one task, else inline in order.
pub(crate) fn run_tasks(task_count: usize, task: impl Fn(usize) + Sync + Send) {
    if task_count == 0 {
        return;
    }
    if task_count > 1
        && let Some(pool) = shared_pool()
    {
        use rayon::prelude::*;
        pool.install(|| (0..task_count).into_par_iter().for_each(&task));
        return;
    }
    (0..task_count).for_each(task);
}

/// Splits `output` into consecutive chunks of `chunk_length` elements (the last may be shorter)
/// and runs `task(chunk_index, chunk)` on each, in parallel when the pool allows.
pub(crate) fn run_chunks_mut<T: Send>(
    output: &mut [T],
    chunk_length: usize,
    task: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let chunk_length = chunk_length.max(1);
    if output.len() > chunk_length
        && let Some(pool) = shared_pool()
    {
        use rayon::prelude::*;
        pool.install(|| {
            output
                .par_chunks_mut(chunk_length)
                .enumerate()
                .for_each(|(index, chunk)| task(index, chunk))
        });
        return;
    }
    output
        .chunks_mut(chunk_length)
        .enumerate()
        .for_each(|(index, chunk)| task(index, chunk));
}

/// The number of threads that parallel kernels will use, for sizing their task lists.
pub(crate) fn parallel_width() -> usize {
    num_threads_or_default().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn thread_count_setting_round_trips_and_tasks_all_run() {
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
}
