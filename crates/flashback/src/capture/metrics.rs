//! The agent's metrics file, `sources/<name>/agent.prom` (Prometheus text format, for
//! node_exporter's textfile collector or any scraper that reads files): the agent's health
//! without an HTTP endpoint. Written atomically (temp + rename), best effort: metrics never stop
//! capture.
//!
//! A cluster source's shards each run a capture loop with its own file
//! (`sources/NAME+LABEL/agent.prom`); their samples also go to a shared [`Board`] from which the
//! cluster's runner writes one file for the source, `sources/NAME/agent.prom`, every shard's
//! samples labelled `shard="LABEL"` plus each shard's window and the common one. One file, not
//! one per shard: the textfile collector reads one directory, and a metric's HELP/TYPE lines
//! may appear once per file, so per-shard files side by side would not merge.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// One gauge sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    /// Rendered label pairs without braces: `source="c",shard="s0"`.
    pub labels: String,
    pub value: f64,
}

/// The latest samples of each shard of a cluster capture, by label.
pub type Board = Arc<Mutex<BTreeMap<String, Vec<Sample>>>>;

/// `name="value"` with the text-format escapes (backslash, quote, newline).
pub fn label(name: &str, value: &str) -> String {
    let v = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("{name}=\"{v}\"")
}

/// The text format: each metric's HELP and TYPE once, then its samples, in first-seen order.
pub fn render(samples: &[Sample]) -> String {
    let mut order: Vec<&'static str> = Vec::new();
    for s in samples {
        if !order.contains(&s.name) {
            order.push(s.name);
        }
    }
    let mut out = String::new();
    for name in order {
        let mut first = true;
        for s in samples.iter().filter(|s| s.name == name) {
            if first {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} gauge", s.help);
                first = false;
            }
            let _ = writeln!(out, "{name}{{{}}} {}", s.labels, s.value);
        }
    }
    out
}

/// Writes `text` as `dir/agent.prom`, atomically.
pub fn write(dir: &Path, text: &str) {
    let tmp = dir.join("agent.prom.tmp");
    let done = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, text))
        .and_then(|_| std::fs::rename(&tmp, dir.join("agent.prom")));
    if done.is_err() {
        tracing::debug!("could not write {}", dir.join("agent.prom").display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &'static str, labels: &str, value: f64) -> Sample {
        Sample {
            name,
            help: "h.",
            labels: labels.into(),
            value,
        }
    }

    #[test]
    fn one_help_per_metric_and_escaped_labels() {
        let text = render(&[
            s("a", &label("shard", "s0"), 1.0),
            s("b", &label("shard", "s0"), 2.0),
            s("a", &label("shard", "s\"1"), 3.0),
        ]);
        assert_eq!(text.matches("# HELP a ").count(), 1);
        assert_eq!(text.matches("# TYPE b gauge").count(), 1);
        assert!(
            text.contains("a{shard=\"s0\"} 1\na{shard=\"s\\\"1\"} 3\n"),
            "{text}"
        );
        assert!(text.find("a{shard=\"s\\\"1\"}").unwrap() < text.find("# HELP b").unwrap());
    }
}
