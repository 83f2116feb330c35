//! Progress: an indicatif bar with loss and steps/s on a TTY, plain periodic
//! lines otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    plain_every: u64,
    quiet: bool,
    total: u64,
    t0: Instant,
    start: u64,
}

impl Progress {
    pub fn new(total: u64, start: u64, quiet: bool) -> Self {
        let bar = if !quiet && std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
                    .expect("valid template"),
            );
            b.set_position(start);
            Some(b)
        } else {
            None
        };
        Self { bar, plain_every: (total / 10).max(1), quiet, total, t0: Instant::now(), start }
    }

    pub fn tick(&mut self, done: u64, loss: f64) {
        let rate = (done - self.start) as f64 / self.t0.elapsed().as_secs_f64().max(1e-9);
        if let Some(b) = &self.bar {
            b.set_position(done);
            b.set_message(format!("loss {loss:.4} · {rate:.1} steps/s"));
        } else if !self.quiet && (done.is_multiple_of(self.plain_every) || done == self.total) {
            eprintln!("step {done}/{} loss {loss:.4} ({rate:.1} steps/s)", self.total);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
