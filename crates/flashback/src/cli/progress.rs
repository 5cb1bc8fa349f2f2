//! Shows a [`Progress`] on stderr while a restore or drill runs: one live line on a terminal
//! (phase, bar, amount, rate, ETA), plain lines otherwise (a phase's end with its time, and a
//! line every [`PLAIN_EVERY`] of a long phase), so a log file gets a readable record and a
//! terminal no scrollback of redraws. stdout stays the report's.
//!
//! Never hiding an error: the live line is erased before the command's result (or error) is
//! printed ([`Shown::finish`] is awaited on every path out), and warnings logged meanwhile
//! simply land above the next redraw.

use flashback::progress::{Current, Phase, Progress, Unit};
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tokio::sync::oneshot;

/// Redraw interval of the live line.
const TICK: Duration = Duration::from_millis(200);
/// How often a long phase prints a plain line when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A live line on a terminal, plain lines otherwise
    Auto,
    /// Plain lines, even on a terminal
    Plain,
    /// Nothing until the end
    None,
}

/// The renderer running beside the work; stop it with [`Shown::finish`].
pub struct Shown {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts showing `progress` under `label` (e.g. "restore").
pub fn show(progress: &Progress, label: &'static str, mode: Mode) -> Shown {
    let live = match mode {
        Mode::None => {
            return Shown {
                stop: None,
                task: None,
            }
        }
        Mode::Auto => std::io::stderr().is_terminal(),
        Mode::Plain => false,
    };
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(render(progress.clone(), label, live, rx));
    Shown {
        stop: Some(tx),
        task: Some(task),
    }
}

impl Shown {
    /// Stops the renderer and erases its line; the phases that ended are already printed.
    pub async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn render(p: Progress, label: &'static str, live: bool, mut stop: oneshot::Receiver<()>) {
    let mut printed_phases = 0;
    let mut last_plain = tokio::time::Instant::now();
    let mut shown_live = false;
    // (phase, time, done) of the previous tick: the rate is measured over the last few ticks,
    // not since the phase began, so a slow start does not skew the ETA forever.
    let mut rate = Rate::default();
    loop {
        let stopped = tokio::select! {
            _ = &mut stop => true,
            _ = tokio::time::sleep(TICK) => false,
        };
        let mut err = std::io::stderr().lock();
        if shown_live {
            let _ = write!(err, "\r\x1b[2K");
            shown_live = false;
        }
        let phases = p.phases();
        for t in phases.iter().skip(printed_phases) {
            let _ = writeln!(
                err,
                "{label}: {} done in {:.2} s",
                t.phase.name(),
                t.elapsed.as_secs_f64()
            );
        }
        printed_phases = phases.len();
        if stopped {
            let _ = err.flush();
            return;
        }
        let Some(cur) = p.current() else {
            continue;
        };
        let per_s = rate.update(&cur);
        if live {
            let _ = write!(err, "{label}: {}", line(&cur, per_s, true));
            shown_live = true;
        } else if cur.elapsed >= PLAIN_EVERY && last_plain.elapsed() >= PLAIN_EVERY {
            let _ = writeln!(err, "{label}: {}", line(&cur, per_s, false));
            last_plain = tokio::time::Instant::now();
        }
        let _ = err.flush();
    }
}

#[derive(Default)]
struct Rate {
    phase: Option<Phase>,
    samples: std::collections::VecDeque<(Duration, u64)>,
}

impl Rate {
    /// Units per second over the last ~2 s of this phase.
    fn update(&mut self, cur: &Current) -> Option<f64> {
        if self.phase != Some(cur.phase) {
            self.phase = Some(cur.phase);
            self.samples.clear();
        }
        self.samples.push_back((cur.elapsed, cur.done));
        while self.samples.len() > 10 {
            self.samples.pop_front();
        }
        let (t0, d0) = *self.samples.front()?;
        let dt = cur.elapsed.saturating_sub(t0).as_secs_f64();
        (dt > 0.3).then(|| cur.done.saturating_sub(d0) as f64 / dt)
    }
}

/// `replay  [=========>          ]  45%  120.3/265.0 MB  38.2 MB/s  ETA 4 s`
fn line(c: &Current, per_s: Option<f64>, bar: bool) -> String {
    let mut s = format!("{:<7}", c.phase.name());
    match c.total.filter(|&t| t > 0) {
        Some(total) => {
            let frac = (c.done as f64 / total as f64).clamp(0.0, 1.0);
            if bar {
                let width = 20;
                let filled = (frac * width as f64) as usize;
                s += &format!(
                    " [{}{}{}]",
                    "=".repeat(filled.saturating_sub(1)),
                    if filled > 0 { ">" } else { "" },
                    " ".repeat(width - filled)
                );
            }
            s += &format!(
                " {:>3.0}%  {}/{}",
                frac * 100.0,
                amount(c.unit, c.done),
                amount(c.unit, total)
            );
            if let Some(r) = per_s.filter(|&r| r > 0.0) {
                s += &format!("  {}/s", amount(c.unit, r as u64));
                let left = total.saturating_sub(c.done) as f64 / r;
                s += &format!("  ETA {}", eta(left));
            }
        }
        None => {
            s += &format!("  {}", amount(c.unit, c.done));
        }
    }
    s += &format!("  ({:.0} s)", c.elapsed.as_secs_f64());
    s
}

fn amount(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Bytes if n >= 1 << 30 => format!("{:.2} GB", n as f64 / (1u64 << 30) as f64),
        Unit::Bytes if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        Unit::Bytes => format!("{:.0} kB", n as f64 / 1024.0),
        Unit::Keys => format!("{n} keys"),
    }
}

fn eta(secs: f64) -> String {
    let s = secs.ceil() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_share_amounts_rate_and_eta() {
        let c = Current {
            phase: Phase::Replay,
            unit: Unit::Bytes,
            done: 100 << 20,
            total: Some(200 << 20),
            elapsed: Duration::from_secs(5),
        };
        let l = line(&c, Some((50u64 << 20) as f64), true);
        assert!(l.starts_with("replay  [=========> "), "{l}");
        assert!(
            l.contains(" 50%  100.0 MB/200.0 MB  50.0 MB/s  ETA 2 s"),
            "{l}"
        );
        let plain = line(&c, None, false);
        assert!(!plain.contains('['), "{plain}");
        let keys = Current {
            phase: Phase::Copy,
            unit: Unit::Keys,
            done: 10,
            total: None,
            elapsed: Duration::from_secs(1),
        };
        assert!(line(&keys, None, true).contains("10 keys"));
        assert_eq!(eta(3725.0), "1h02m");
        assert_eq!(eta(61.0), "1m01s");
    }
}
