//! Study variants side by side: one single-threaded worker per core, each taking
//! the next job from a shared queue. Every kernel is thread-count independent, so
//! results equal a sequential run; they come back in job order.

use std::sync::Mutex;

use super::error::StudyError;

/// Run `job(i)` for every index of `order` (the order jobs are taken in) on
/// `workers` single-threaded workers; returns results by index `0..order.len()`.
/// `done(i, &result)` is called as each job finishes (progress lines).
pub fn run_jobs<R: Send>(
    order: Vec<usize>,
    workers: usize,
    job: impl Fn(usize) -> Result<R, StudyError> + Sync,
    done: impl Fn(usize, &R) + Sync,
) -> Result<Vec<R>, StudyError> {
    let n = order.len();
    if workers <= 1 {
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        for i in order {
            let r = job(i)?;
            done(i, &r);
            out[i] = Some(r);
        }
        return Ok(out.into_iter().map(|r| r.expect("every job ran")).collect());
    }
    let queue = Mutex::new(order.into_iter());
    let results = Mutex::new(Vec::with_capacity(n));
    // candle's own elementwise ops read the thread count from the environment.
    let saved = std::env::var("RAYON_NUM_THREADS").ok();
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let outcome = std::thread::scope(|scope| -> Result<(), StudyError> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<(), StudyError> {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().map_err(candle_core::Error::wrap)?;
                    loop {
                        let next = queue.lock().expect("queue lock").next();
                        let Some(i) = next else { return Ok(()) };
                        let r = pool.install(|| job(i))?;
                        done(i, &r);
                        results.lock().expect("results lock").push((i, r));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("study worker panicked")?;
        }
        Ok(())
    });
    match saved {
        Some(v) => std::env::set_var("RAYON_NUM_THREADS", v),
        None => std::env::remove_var("RAYON_NUM_THREADS"),
    }
    outcome?;
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}
