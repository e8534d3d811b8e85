//! Step-by-step progress on stderr: spinners with elapsed time on a terminal, one plain line
//! per step otherwise (logs, CI). Data goes to stdout, never here.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// One step in progress.
pub struct Step {
    bar: Option<ProgressBar>,
    title: String,
    start: Instant,
}

impl Step {
    /// Starts a step.
    pub fn start(title: impl Into<String>) -> Step {
        let title = title.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(title.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        if bar.is_none() {
            crate::out::note(&format!("... {title}"));
        }
        Step { bar, title, start: Instant::now() }
    }

    /// Updates the step's detail (e.g. what it waits for).
    pub fn detail(&self, detail: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}: {detail}", self.title));
        }
    }

    /// Ends the step successfully.
    pub fn done(self, result: &str) {
        let line = format!("✔ {} ({:.1}s){}", self.title, self.start.elapsed().as_secs_f64(), suffix(result));
        self.finish(line);
    }

    /// Ends the step with a failure.
    pub fn failed(self, why: &str) {
        let line = format!("✘ {} ({:.1}s): {why}", self.title, self.start.elapsed().as_secs_f64());
        self.finish(line);
    }

    /// Seconds since the step started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn finish(self, line: String) {
        match self.bar {
            Some(bar) => bar.finish_with_message(line),
            None => crate::out::note(&line),
        }
    }
}

fn suffix(result: &str) -> String {
    if result.is_empty() { String::new() } else { format!(": {result}") }
}
