//! Progress on stderr: a line rewritten in place on a terminal, plain periodic lines in a log.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    what: String,
    terminal: bool,
    started: Instant,
    last: Option<Instant>,
}

/// How often a log gets a line.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    pub fn new(what: impl Into<String>) -> Self {
        Progress { what: what.into(), terminal: std::io::stderr().is_terminal(), started: Instant::now(), last: None }
    }

    /// Reports `done` of `total`, with the time left once it can be estimated.
    pub fn update(&mut self, done: usize, total: usize) {
        let now = Instant::now();
        let finished = done >= total;
        let due = match self.last {
            None => true,
            Some(t) => now - t >= if self.terminal { Duration::from_millis(200) } else { LOG_EVERY },
        };
        if !due && !finished {
            return;
        }
        self.last = Some(now);
        let elapsed = now - self.started;
        let eta = if done > 0 && !finished {
            let left = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
            format!(", about {} left", short_duration(left))
        } else {
            String::new()
        };
        let line = format!("{}: {done}/{total}{eta}", self.what);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
            if finished {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

pub fn short_duration(seconds: f64) -> String {
    if seconds < 90.0 { format!("{seconds:.0} s") } else { format!("{:.0} min", seconds / 60.0) }
}
