use super::*;
use bytes::Bytes;

fn argv(s: &str) -> Vec<&[u8]> {
    s.split(' ').map(str::as_bytes).collect()
}

fn keys(t: &CommandTable, s: &str) -> Vec<usize> {
    t.key_positions(&argv(s))
}

#[test]
fn builtin_positions() {
    let t = CommandTable::builtin();
    assert_eq!(keys(&t, "SET k v EX 10"), [1]);
    assert_eq!(keys(&t, "del a b c"), [1, 2, 3]);
    assert_eq!(keys(&t, "MSET a 1 b 2"), [1, 3]);
    assert_eq!(keys(&t, "RENAME a b"), [1, 2]);
    assert_eq!(keys(&t, "COPY a b DB 3 REPLACE"), [1, 2]);
    assert_eq!(keys(&t, "EVAL s 2 a b x"), [3, 4]);
    assert_eq!(keys(&t, "EVAL s 0 x"), Vec::<usize>::new());
    assert_eq!(
        keys(&t, "EVAL s 5 a"),
        Vec::<usize>::new(),
        "numkeys past the end"
    );
    assert_eq!(keys(&t, "FCALL f 1 a x"), [3]);
    assert_eq!(keys(&t, "ZUNIONSTORE d 2 a b WEIGHTS 1 2"), [1, 3, 4]);
    assert_eq!(keys(&t, "LMPOP 2 a b LEFT"), [2, 3]);
    assert_eq!(keys(&t, "BLMPOP 0 2 a b LEFT"), [3, 4]);
    assert_eq!(keys(&t, "SINTERCARD 2 a b LIMIT 1"), [2, 3]);
    assert_eq!(keys(&t, "BLPOP a b 0"), [1, 2]);
    assert_eq!(keys(&t, "SORT k BY w_* GET # LIMIT 0 1 STORE d"), [1, 10]);
    assert_eq!(keys(&t, "SORT k STORE d1 STORE d2"), [1, 5]);
    assert_eq!(
        keys(&t, "SORT k GET store"),
        [1],
        "an argument named store is not STORE"
    );
    assert_eq!(keys(&t, "GEORADIUS g 0 0 10 km STORE d"), [1, 7]);
    assert_eq!(keys(&t, "GEORADIUSBYMEMBER g m 10 km STOREDIST d"), [1, 6]);
    assert_eq!(keys(&t, "MIGRATE h 1 k 0 5000"), [3]);
    assert_eq!(
        keys(&t, "MIGRATE h 1  0 5000 COPY AUTH keys KEYS a b"),
        [10, 11]
    );
    assert_eq!(keys(&t, "MIGRATE h 1  0 5000 AUTH2 u p KEYS a"), [10]);
    assert_eq!(
        keys(&t, "XREADGROUP GROUP g c COUNT 1 STREAMS s1 s2 > >"),
        [7, 8]
    );
    assert_eq!(keys(&t, "xgroup CREATE s g $ MKSTREAM"), [2]);
    assert_eq!(keys(&t, "MSETEX 2 a 1 b 2 EX 5"), [2, 4]);
    assert_eq!(keys(&t, "BITOP AND d a b"), [2, 3, 4]);
    assert!(t.is_write(b"HSETEX") && t.is_write(b"xgroup|create") && !t.is_write(b"xgroup"));
    assert!(!t.is_write(b"nosuch") && !t.is_write(b"publish"));
}

#[test]
fn short_or_odd_argv_never_panics() {
    let t = CommandTable::builtin();
    for (name, _, _, _) in builtin::TABLE {
        let name = name.split('|').collect::<Vec<_>>();
        for n in 0..6 {
            let mut a: Vec<&[u8]> = name.iter().map(|s| s.as_bytes()).collect();
            a.extend(std::iter::repeat_n(&b"1"[..], n));
            let p = t.key_positions(&a);
            assert!(p.iter().all(|&i| i < a.len() && i >= 1), "{a:?} -> {p:?}");
            a.push(b"-3");
            t.key_positions(&a);
        }
    }
    assert!(t.key_positions(&[]).is_empty());
    assert!(t.key_positions(&[b"NOSUCH", b"k"]).is_empty());
    assert!(t.key_positions(&[b"xgroup"]).is_empty());
}

fn b(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}
fn arr(v: Vec<Frame>) -> Frame {
    Frame::Array(v)
}

/// A module command as a Redis 7 COMMAND reply describes it (RESP2 maps as flat arrays).
fn module_entry() -> Frame {
    let spec = arr(vec![
        b("flags"),
        arr(vec![Frame::Simple("RW".into())]),
        b("begin_search"),
        arr(vec![
            b("type"),
            b("index"),
            b("spec"),
            arr(vec![b("index"), Frame::Integer(2)]),
        ]),
        b("find_keys"),
        arr(vec![
            b("type"),
            b("keynum"),
            b("spec"),
            arr(vec![
                b("keynumidx"),
                Frame::Integer(0),
                b("firstkey"),
                Frame::Integer(1),
                b("keystep"),
                Frame::Integer(1),
            ]),
        ]),
    ]);
    arr(vec![
        b("MOD.MULTI"),
        Frame::Integer(-3),
        arr(vec![
            Frame::Simple("write".into()),
            Frame::Simple("module".into()),
        ]),
        Frame::Integer(0),
        Frame::Integer(0),
        Frame::Integer(0),
        arr(vec![]),
        arr(vec![]),
        arr(vec![spec]),
        arr(vec![]),
    ])
}

#[test]
fn a_reply_adds_module_commands_and_keeps_the_builtin_for_the_rest() {
    let legacy = arr(vec![
        b("old.cmd"),
        Frame::Integer(-2),
        arr(vec![Frame::Simple("write".into())]),
        Frame::Integer(1),
        Frame::Integer(-1),
        Frame::Integer(2),
    ]);
    let reply = arr(vec![module_entry(), legacy, Frame::Null]);
    let t = CommandTable::from_command_reply(&reply).unwrap();
    assert_eq!(keys(&t, "mod.multi x 2 a b"), [3, 4]);
    assert!(t.is_write(b"MOD.MULTI") && t.get(b"mod.multi").unwrap().from_server);
    assert_eq!(keys(&t, "OLD.CMD a 1 b 2"), [1, 3]);
    assert_eq!(keys(&t, "SET k v"), [1], "the builtin fills in");
    assert!(!t.get(b"set").unwrap().from_server);

    for bad in [
        b("x"),
        arr(vec![arr(vec![b("x")])]),
        arr(vec![Frame::Integer(3)]),
    ] {
        let e = CommandTable::from_command_reply(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("COMMAND reply"), "{e}");
    }
}
