//! The power-loss harness: `powercut.c` (an LD_PRELOAD shim, built here with `cc`) journals
//! what the agent made durable under a directory; [`PowerCut::cut`] replays that journal after
//! the agent was SIGKILLed and replaces the directory with what a power cut would have left:
//! each file with the content it had at its last fsync/fdatasync (empty if none), each
//! directory with the entries it held at its last fsync (the entries it had when the harness
//! started if none). A name is reached only through durable entries from the root down, so a
//! file whose data was synced under a rename or a new directory never fsync'd is gone.
//!
//! A `kill -9` keeps the page cache, so only this catches an ACK sent before its fsync. The
//! model is the harshest that POSIX allows for data (nothing unsynced survives); the kinder
//! cases (some unsynced bytes survive, a torn tail) are what the kill -9 tests cover.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const SHIM_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/util/powercut.c");

/// Builds the shim next to the flashback binary (the test's target dir) once per source change.
pub fn shim() -> PathBuf {
    let bin = Path::new(crate::util::flashback_bin());
    let out = bin
        .parent()
        .expect("the flashback binary has a directory")
        .join("powercut-shim.so");
    let src_time = fs::metadata(SHIM_SOURCE).and_then(|m| m.modified()).ok();
    let out_time = fs::metadata(&out).and_then(|m| m.modified()).ok();
    if out_time.is_some() && out_time >= src_time {
        return out;
    }
    let tmp = out.with_extension(format!("so.{}", std::process::id()));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&tmp)
        .arg(SHIM_SOURCE)
        .arg("-ldl")
        .arg("-lpthread")
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run cc to build the power-loss shim: {e} (install gcc)")
        });
    assert!(status.success(), "building {SHIM_SOURCE} failed: {status}");
    fs::rename(&tmp, &out).unwrap();
    out
}

/// (inode, journal line that created it; 0 for inodes that existed when the harness started).
type Inc = (u64, usize);

#[derive(Default)]
struct Durable {
    files: HashMap<Inc, Vec<u8>>,
    dirs: HashMap<Inc, Vec<(Vec<u8>, char, Inc)>>,
}

pub struct PowerCut {
    pub root: PathBuf,
    journal: PathBuf,
    root_ino: u64,
    initial: Durable,
    cuts: usize,
}

/// What a replayed journal held, for assertions that the cut really dropped something.
#[derive(Debug, Default, Clone, Copy)]
pub struct CutStats {
    pub file_syncs: usize,
    pub dir_syncs: usize,
    pub creations: usize,
    /// Bytes on disk before the cut that the cut threw away (summed over surviving names).
    pub bytes_dropped: u64,
    /// Names present before the cut that it removed.
    pub names_dropped: usize,
}

impl PowerCut {
    /// Takes `root` (which must exist and be quiet) as durable as it is now, with a fresh
    /// journal in `journal`.
    pub fn begin(root: &Path, journal: &Path) -> PowerCut {
        fs::create_dir_all(root).unwrap();
        let _ = fs::remove_dir_all(journal);
        fs::create_dir_all(journal).unwrap();
        let root = fs::canonicalize(root).unwrap();
        let mut initial = Durable::default();
        walk(&root, &mut initial);
        PowerCut {
            root_ino: ino(&root),
            root,
            journal: journal.to_path_buf(),
            initial,
            cuts: 0,
        }
    }

    /// The environment that puts the shim into a child.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), shim().display().to_string()),
            ("FLASHBACK_PL_ROOT".into(), self.root.display().to_string()),
            (
                "FLASHBACK_PL_JOURNAL".into(),
                self.journal.display().to_string(),
            ),
        ]
    }

    /// After the process under the shim is dead: replaces the tree under the root by its
    /// durable state. The tree as it was is kept beside it (`<root>.before-cut-N`) for a
    /// post-mortem.
    pub fn cut(mut self) -> CutStats {
        let text = fs::read_to_string(self.journal.join("journal")).unwrap_or_default();
        let blob = fs::read(self.journal.join("blob")).unwrap_or_default();
        let mut d = std::mem::take(&mut self.initial);
        let mut current: HashMap<u64, usize> = HashMap::new();
        let mut stats = CutStats::default();
        let inc =
            |current: &HashMap<u64, usize>, i: u64| (i, current.get(&i).copied().unwrap_or(0));
        for (n, line) in text.split_inclusive('\n').enumerate() {
            // A line cut short by the kill is a sync that never returned: ignore it.
            let Some(line) = line.strip_suffix(" .\n") else {
                continue;
            };
            let f: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| -> u64 { f[i].parse().unwrap() };
            match f[0] {
                "N" => {
                    let i = num(1);
                    current.insert(i, n + 1);
                    stats.creations += 1;
                }
                "F" => {
                    let at = inc(&current, num(1));
                    let (size, same, off) = (num(2) as usize, num(3) as usize, num(4) as usize);
                    let prev = d.files.get(&at).cloned().unwrap_or_default();
                    let mut content = prev[..same.min(prev.len())].to_vec();
                    content.extend_from_slice(&blob[off..off + (size - same)]);
                    assert_eq!(content.len(), size, "journal line {n}: {line}");
                    d.files.insert(at, content);
                    stats.file_syncs += 1;
                }
                "D" => {
                    let at = inc(&current, num(1));
                    let entries = f[3..]
                        .iter()
                        .map(|e| {
                            let p: Vec<&str> = e.split(':').collect();
                            let name = (0..p[0].len())
                                .step_by(2)
                                .map(|i| u8::from_str_radix(&p[0][i..i + 2], 16).unwrap())
                                .collect();
                            let kind = p[1].chars().next().unwrap();
                            (name, kind, inc(&current, p[2].parse().unwrap()))
                        })
                        .collect();
                    d.dirs.insert(at, entries);
                    stats.dir_syncs += 1;
                }
                "X" => panic!(
                    "the agent made a call the power-loss model cannot represent: {line} \
                     (teach tests/util/powercut.c about it)"
                ),
                other => panic!("bad journal line {n}: {other}"),
            }
        }
        self.cuts += 1;
        let rebuilt = self.root.with_extension("rebuilt");
        let _ = fs::remove_dir_all(&rebuilt);
        fs::create_dir_all(&rebuilt).unwrap();
        build(&d, (self.root_ino, 0), &rebuilt, 0);
        compare(&self.root, &rebuilt, &mut stats);
        let mut keep = self
            .root
            .with_extension(format!("before-cut-{}", self.cuts));
        let mut k = 0;
        while keep.exists() {
            k += 1;
            keep = self
                .root
                .with_extension(format!("before-cut-{}-{k}", self.cuts));
        }
        fs::rename(&self.root, &keep).unwrap();
        fs::rename(&rebuilt, &self.root).unwrap();
        stats
    }
}

fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).unwrap().ino()
}

fn walk(dir: &Path, d: &mut Durable) {
    let mut entries = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let i = (ino(&p), 0);
        let t = e.file_type().unwrap();
        use std::os::unix::ffi::OsStrExt;
        let name = e.file_name().as_bytes().to_vec();
        if t.is_dir() {
            walk(&p, d);
            entries.push((name, 'd', i));
        } else if t.is_file() {
            d.files.insert(i, fs::read(&p).unwrap());
            entries.push((name, 'f', i));
        }
    }
    d.dirs.insert((ino(dir), 0), entries);
}

fn build(d: &Durable, dir: Inc, at: &Path, depth: usize) {
    assert!(
        depth < 64,
        "directory cycle in the durable tree at {}",
        at.display()
    );
    use std::os::unix::ffi::OsStrExt;
    for (name, kind, i) in d.dirs.get(&dir).map(|v| v.as_slice()).unwrap_or(&[]) {
        let p = at.join(std::ffi::OsStr::from_bytes(name));
        match kind {
            'd' => {
                fs::create_dir(&p).unwrap();
                build(d, *i, &p, depth + 1);
            }
            'f' => fs::write(&p, d.files.get(i).map(|v| v.as_slice()).unwrap_or(&[])).unwrap(),
            _ => {}
        }
    }
}

fn compare(before: &Path, after: &Path, s: &mut CutStats) {
    let Ok(entries) = fs::read_dir(before) else {
        return;
    };
    for e in entries.flatten() {
        let (b, a) = (e.path(), after.join(e.file_name()));
        if !a.exists() {
            s.names_dropped += 1;
        } else if b.is_dir() {
            compare(&b, &a, s);
        } else {
            let (lb, la) = (
                fs::metadata(&b).map(|m| m.len()).unwrap_or(0),
                fs::metadata(&a).map(|m| m.len()).unwrap_or(0),
            );
            s.bytes_dropped += lb.saturating_sub(la);
        }
    }
}
