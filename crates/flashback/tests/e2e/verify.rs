//! `flashback verify` against a store written by a real `flashback capture` of a real
//! redis-server: a healthy store verifies with a drill whose digest is the source's; copies of
//! it, damaged one way each, fail naming the object (and the byte or offsets), and what the
//! report says still restores does.

use crate::util;

use crate::util::{at_arg, now_ms, restore_rdb, run_flashback, state, Agent, Output, RedisProc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Hex of pseudo-random bytes: compresses about 2x, so a few MB of writes fill several 1 MiB
/// segments.
fn value(seed: &mut u64, len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        s.push_str(&format!("{:016x}", *seed));
    }
    s.truncate(len);
    s
}

fn verify(store: &Path, extra: &[&str]) -> (Output, Value) {
    let mut args: Vec<std::ffi::OsString> = vec!["verify".into(), "--store".into(), store.into()];
    args.extend(extra.iter().map(|a| a.into()));
    let out = run_flashback(&args, Duration::from_secs(300));
    let json = if extra.contains(&"--json") {
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("verify --json is not JSON ({e}):\n{}", out.all()))
    } else {
        Value::Null
    };
    (out, json)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The store's object key of a file in it.
fn key_of(store: &Path, file: &Path) -> String {
    file.strip_prefix(store)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// (start offset, end offset) from a sealed segment's file name.
fn offsets(seg: &Path) -> (u64, u64) {
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let parts: Vec<u64> = name
        .trim_end_matches(".seg")
        .split('-')
        .map(|p| u64::from_str_radix(p, 16).unwrap())
        .collect();
    (parts[0], parts[1])
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn problems(j: &Value) -> Vec<Value> {
    j["sources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["problems"].as_array().unwrap().clone())
        .collect()
}

/// A copy of `store` with one thing done to it, and its generation directory in the copy.
fn damaged(store: &Path, gen: &Path, root: &Path, what: &str) -> (PathBuf, PathBuf) {
    let copy = root.join(what);
    copy_dir(store, &copy);
    let gen = copy.join(gen.strip_prefix(store).unwrap());
    (copy, gen)
}

fn assert_fails_naming(out: &Output, j: &Value, key: &str, kind: &str) -> Value {
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stdout.contains("\"ok\": false"),
        "not ok in JSON:\n{}",
        out.all()
    );
    let ps = problems(j);
    ps.iter()
        .find(|p| p["key"] == key && p["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} problem naming {key}:\n{}", out.all()))
        .clone()
}

/// The newest checkpoint at or before the problem's `restorable_through_ms` restores exactly.
fn assert_restores_through(store: &Path, p: &Value, checkpoints: &[(u64, String)]) {
    let through = p["restorable_through_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no restorable bound: {p}"));
    let (t, want) = checkpoints
        .iter()
        .rev()
        .find(|(t, _)| *t <= through)
        .unwrap_or_else(|| panic!("no checkpoint before {through}: {checkpoints:?}"));
    assert_eq!(
        &restore_rdb(store, &["--at", &at_arg(*t)]),
        want,
        "restore at {t}, before the damage"
    );
}

#[test]
fn verify_healthy_store_then_each_kind_of_damage() {
    let source = RedisProc::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut agent = Agent::start(source.port, &store, &["--segment-mib", "1"]);
    agent.wait_online(&source);

    // Writes in batches; after each, once the agent has made everything durable, a checkpoint:
    // an instant between batches and the source's state then.
    let mut conn = source.conn();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut checkpoints: Vec<(u64, String)> = Vec::new();
    for batch in 0..16 {
        let cmds: Vec<Vec<String>> = (0..400)
            .map(|i| {
                vec![
                    "SET".into(),
                    format!("key:{batch}:{i}"),
                    value(&mut seed, 1500),
                ]
            })
            .collect();
        for chunk in cmds.chunks(100) {
            for r in conn.pipeline(chunk) {
                assert!(!r.is_error(), "{}", r.text());
            }
        }
        agent.wait_caught_up(&source);
        std::thread::sleep(Duration::from_millis(5));
        checkpoints.push((now_ms(), state(&mut conn)));
        std::thread::sleep(Duration::from_millis(5));
    }
    let final_digest = conn.call(&["DEBUG", "DIGEST"]).text();
    let dbsize = conn.call(&["DBSIZE"]).int();
    agent.stop();

    let gens = util::generation_dirs(&store);
    assert_eq!(gens.len(), 1, "{gens:?}");
    let gen = &gens[0];
    let sealed = files(&gen.join("segments"), "seg");
    assert!(
        sealed.len() >= 4,
        "want several sealed segments, got {sealed:?}"
    );

    // Healthy: OK, and the drill's digest is the source's.
    let (out, j) = verify(&store, &["--json"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(j["schema"], 1);
    assert_eq!(j["ok"], true, "{}", out.all());
    assert_eq!(j["problem_count"], 0);
    let drill = &j["sources"][0]["drill"];
    assert_eq!(drill["digest"], final_digest.as_str(), "{}", out.all());
    assert_eq!(drill["keys"], dbsize, "{}", out.all());
    assert!(drill["rto_ms"].as_u64().unwrap() > 0, "{}", out.all());
    assert!(drill["records"].as_u64().unwrap() >= 6400, "{}", out.all());
    let (out, _) = verify(&store, &["--no-drill"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.starts_with("OK: 1 source"), "{}", out.all());

    let root = tempfile::tempdir().unwrap();

    // (a) One byte flipped in the middle of a middle segment.
    let (copy, g) = damaged(&store, gen, root.path(), "flipped");
    let seg = files(&g.join("segments"), "seg")[sealed.len() / 2].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let (out, j) = verify(&copy, &["--json"]);
    let p = assert_fails_naming(&out, &j, &key_of(&copy, &seg), "corrupt");
    let at_byte = p["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no byte offset: {p}"));
    assert!(
        at_byte <= mid as u64,
        "damage at {mid}, reported at {at_byte}"
    );
    // The latest instant is past the damage: the drill fails too, on the same object, which
    // is a warning (the problem is counted once).
    assert_eq!(j["problem_count"], 1, "{}", out.all());
    let warnings = j["sources"][0]["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w["kind"] == "drill" && w["key"] == key_of(&copy, &seg)),
        "{}",
        out.all()
    );
    // What the report says still restores does, exactly.
    assert_restores_through(&copy, &p, &checkpoints);
    let (out, _) = verify(&copy, &["--no-drill"]);
    assert!(
        out.stdout.starts_with("FAILED: 1 problem\n"),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains(&key_of(&copy, &seg)), "{}", out.all());
    assert!(out.stdout.contains(" at byte "), "{}", out.all());

    // (b) A sealed segment cut short.
    let (copy, g) = damaged(&store, gen, root.path(), "truncated-segment");
    let seg = files(&g.join("segments"), "seg")[1].clone();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len * 2 / 3)
        .unwrap();
    let (out, j) = verify(&copy, &["--json", "--no-drill"]);
    assert_fails_naming(&out, &j, &key_of(&copy, &seg), "truncated");

    // (c) A middle segment deleted: a hole, named by its offsets.
    let (copy, g) = damaged(&store, gen, root.path(), "missing-segment");
    let seg = files(&g.join("segments"), "seg")[sealed.len() / 2].clone();
    std::fs::remove_file(&seg).unwrap();
    let (start, end) = offsets(&seg);
    let (out, j) = verify(&copy, &["--json", "--no-drill"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let ps = problems(&j);
    let hole = ps
        .iter()
        .find(|p| p["kind"] == "missing")
        .unwrap_or_else(|| panic!("no missing problem:\n{}", out.all()));
    assert!(
        hole["message"]
            .as_str()
            .unwrap()
            .contains(&format!("offsets {start}..{end}")),
        "{}",
        out.all()
    );
    assert_eq!(ps.len(), 1, "only the hole: {}", out.all());

    // (g) The newest segments deleted: the names left chain without a hole, but the log
    // head the agent wrote says the log went further.
    assert!(
        gen.join("log.head").exists(),
        "the agent writes a log head beside its segments"
    );
    let (copy, g) = damaged(&store, gen, root.path(), "newest-segments-gone");
    let segs = files(&g.join("segments"), "seg");
    for f in &segs[segs.len() - 2..] {
        std::fs::remove_file(f).unwrap();
    }
    let (cut, _) = offsets(&segs[segs.len() - 2]);
    let (out, j) = verify(&copy, &["--json", "--no-drill"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let ps = problems(&j);
    assert_eq!(ps.len(), 1, "{}", out.all());
    let p = &ps[0];
    assert_eq!(p["kind"], "missing", "{}", out.all());
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains(&format!("the segments after offset {cut} are gone")),
        "{}",
        out.all()
    );
    assert_restores_through(&copy, p, &checkpoints);

    // (d) The base cut short.
    let (copy, g) = damaged(&store, gen, root.path(), "truncated-base");
    let base = files(&g.join("base"), "rdb")[0].clone();
    let len = std::fs::metadata(&base).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&base)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (out, j) = verify(&copy, &["--json", "--no-drill"]);
    assert_fails_naming(&out, &j, &key_of(&copy, &base), "truncated");

    // (f) The name records each object's size and crc32c (the healthy run above proved the
    // checksums): a sealed segment whose bytes are intact but whose name records another
    // checksum is corrupt, and a base listed smaller than its name records is truncated.
    for f in files(&gen.join("segments"), "seg")
        .iter()
        .chain(&files(&gen.join("base"), "rdb"))
    {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let fields: Vec<&str> = name.split(['-', '.']).collect();
        let size = u64::from_str_radix(fields[fields.len() - 3], 16).unwrap();
        assert_eq!(size, std::fs::metadata(f).unwrap().len(), "{name}");
    }
    let rename_field = |file: &Path, from_end: usize, f: &dyn Fn(u64) -> String| {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let (stem, ext) = name.rsplit_once('.').unwrap();
        let mut fields: Vec<String> = stem.split('-').map(str::to_string).collect();
        let i = fields.len() - from_end;
        fields[i] = f(u64::from_str_radix(&fields[i], 16).unwrap());
        let to = file.with_file_name(format!("{}.{ext}", fields.join("-")));
        std::fs::rename(file, &to).unwrap();
        to
    };
    let (copy, g) = damaged(&store, gen, root.path(), "wrong-checksum");
    let seg = files(&g.join("segments"), "seg")[1].clone();
    let seg = rename_field(&seg, 1, &|crc| format!("{:08x}", crc ^ 1));
    let (out, j) = verify(&copy, &["--json", "--no-drill"]);
    let p = assert_fails_naming(&out, &j, &key_of(&copy, &seg), "corrupt");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains("recorded in its name"),
        "{}",
        out.all()
    );
    assert_eq!(problems(&j).len(), 1, "{}", out.all());
    let (copy, g) = damaged(&store, gen, root.path(), "short-base");
    let base = files(&g.join("base"), "rdb")[0].clone();
    let base = rename_field(&base, 2, &|size| format!("{:x}", size + 1));
    let (out, j) = verify(&copy, &["--json", "--no-drill"]);
    let p = assert_fails_naming(&out, &j, &key_of(&copy, &base), "truncated");
    assert!(
        p["message"].as_str().unwrap().contains("its name records"),
        "{}",
        out.all()
    );

    // (e) Not damage: a new base, then a prune that deletes the first base and the log before
    // the new one. Verify starts the chain where restore does, at the oldest base left.
    let (copy, g) = damaged(&store, gen, root.path(), "pruned");
    let first_base = files(&g.join("base"), "rdb")[0].clone();
    for args in [vec!["compact", "--force"], vec!["prune", "--keep", "1s"]] {
        let mut a: Vec<std::ffi::OsString> = args.iter().map(|s| s.into()).collect();
        a.extend(["--store".into(), copy.clone().into_os_string()]);
        let out = run_flashback(&a, Duration::from_secs(300));
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.all());
    }
    assert!(!first_base.exists(), "prune kept the first base");
    let (out, j) = verify(&copy, &["--json"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(j["sources"][0]["drill"]["digest"], final_digest.as_str());

    // (h) A flipped byte in the log head: every stored file is checked, so verify fails
    // naming it and the byte, yet says the log itself still restores (the drill passes).
    let (copy, g) = damaged(&store, gen, root.path(), "corrupt-head");
    let head = g.join("log.head");
    let mut bytes = std::fs::read(&head).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&head, &bytes).unwrap();
    let (out, j) = verify(&copy, &["--json"]);
    let p = assert_fails_naming(&out, &j, &key_of(&copy, &head), "corrupt");
    assert!(p["offset"].is_u64(), "the byte is named: {p}");
    assert!(
        p["impact"]
            .as_str()
            .unwrap()
            .contains("restore does not read it"),
        "{p}"
    );
    assert_eq!(problems(&j).len(), 1, "{}", out.all());
    assert_eq!(j["sources"][0]["drill"]["digest"], final_digest.as_str());
    let (out, _) = verify(&copy, &["--no-drill"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("log.head"), "{}", out.all());
}
