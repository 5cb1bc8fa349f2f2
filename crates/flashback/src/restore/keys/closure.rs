//! The closure of a selection: union-find over the keys that appear together in a command
//! whose result depends on more than one key, with SWAPDB followed as a permutation of dbs.
//!
//! A key is named by (logical db, name), where the logical db is the db number the key's db
//! had at the base: SWAPDB swaps which physical db holds which logical one, so the history of
//! a key before and after a SWAPDB stays one history. Only keys seen in a linking command are
//! stored: memory is bounded by those, not by the dataset. Time order is ignored (a component
//! links keys whatever the order of their commands), which may keep a few more keys than
//! needed and never fewer.

use super::Selection;
use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
pub struct Closure {
    ids: HashMap<(u32, Vec<u8>), u32>,
    parent: Vec<u32>,
    /// Per root, after [`Closure::finish`]: does its component hold a selected key?
    selected: Vec<bool>,
    /// Physical db → logical db (identity where absent).
    perm: HashMap<u32, u32>,
    pub sel: Selection,
    /// The logical db `--db N` names at the restore point.
    sel_logical_db: Option<u32>,
    /// A partitioned rebuild's partition: (partitions, this one). It replaces the selection:
    /// a key seen in no linking command is this partition's when its hash slot says so.
    part: Option<(u32, u32)>,
    /// A splice's closure ([`Closure::touched`]): exactly the keys the log names, each one
    /// stored (linked alone when its command names only it); a key never named is not in it.
    touched_only: bool,
}

impl Closure {
    pub fn new(sel: Selection) -> Closure {
        Closure {
            sel,
            ..Default::default()
        }
    }

    /// The closure of a splice (`restore::splice`): every key a record names, and no other.
    pub fn touched() -> Closure {
        Closure {
            touched_only: true,
            ..Default::default()
        }
    }

    pub fn logical(&self, physical: u32) -> u32 {
        self.perm.get(&physical).copied().unwrap_or(physical)
    }

    pub fn swapdb(&mut self, a: u32, b: u32) {
        let (la, lb) = (self.logical(a), self.logical(b));
        self.perm.insert(a, lb);
        self.perm.insert(b, la);
    }

    fn id(&mut self, db: u32, name: &[u8]) -> u32 {
        if let Some(&i) = self.ids.get(&(db, name.to_vec())) {
            return i;
        }
        let i = self.parent.len() as u32;
        self.parent.push(i);
        self.ids.insert((db, name.to_vec()), i);
        i
    }

    fn root(&mut self, mut i: u32) -> u32 {
        while self.parent[i as usize] != i {
            let p = self.parent[i as usize];
            self.parent[i as usize] = self.parent[p as usize];
            i = p;
        }
        i
    }

    /// Links keys given as (physical db, name) in the current db permutation.
    pub fn link<'a>(&mut self, keys: impl IntoIterator<Item = (u32, &'a [u8])>) {
        let mut first = None;
        for (db, name) in keys {
            let l = self.logical(db);
            let i = self.id(l, name);
            let r = self.root(i);
            match first {
                None => first = Some(r),
                Some(f) if f != r => self.parent[r as usize] = f,
                Some(_) => {}
            }
        }
    }

    /// Ends the first pass: the db permutation at the restore point names `--db`'s logical db,
    /// every component is marked, and the permutation is reset for the second pass (which
    /// follows the SWAPDBs again, in order).
    pub fn finish(&mut self) {
        self.sel_logical_db = self.sel.db.map(|d| self.logical(d));
        let n = self.parent.len();
        let mut selected = vec![false; n];
        let keys: Vec<(u32, Vec<u8>, u32)> = self
            .ids
            .iter()
            .map(|((db, k), &i)| (*db, k.clone(), i))
            .collect();
        for (db, k, i) in keys {
            if self.touched_only || self.matches(db, &k) {
                let r = self.root(i);
                selected[r as usize] = true;
            }
        }
        for i in 0..n as u32 {
            let r = self.root(i);
            selected[i as usize] = selected[r as usize];
        }
        self.selected = selected;
        self.perm.clear();
    }

    /// A partitioned rebuild's first pass is over (instead of [`Closure::finish`]): each linked
    /// component's partition, by id, is the hash slot of its root key's name modulo `n`: any
    /// rule works as long as all the partitions' closures share it (they are clones of this
    /// one, given this vector).
    pub fn component_partitions(&mut self, n: u32) -> Vec<u32> {
        let own: Vec<(u32, u32)> = self
            .ids
            .iter()
            .map(|((_, k), &i)| (i, partition_of(k, n)))
            .collect();
        let mut of_root = vec![0; self.parent.len()];
        for (i, p) in own {
            of_root[i as usize] = p;
        }
        (0..self.parent.len() as u32)
            .map(|i| of_root[self.root(i) as usize])
            .collect()
    }

    /// Makes this closure partition `p` of `n`, given [`Closure::component_partitions`]; the
    /// permutation is reset for the second pass, as [`Closure::finish`] does.
    pub fn keep_partition(&mut self, n: u32, p: u32, of_id: &[u32]) {
        self.selected = of_id.iter().map(|&q| q == p).collect();
        self.part = Some((n, p));
        self.sel_logical_db = None;
        self.perm.clear();
    }

    fn matches(&self, logical_db: u32, name: &[u8]) -> bool {
        if self.touched_only {
            // Only reached for a key no record names (a stored key is selected by `finish`).
            return false;
        }
        if let Some((n, p)) = self.part {
            return partition_of(name, n) == p;
        }
        self.sel_logical_db.is_none_or(|d| d == logical_db) && self.sel.matches_name(name)
    }

    /// Whether the key (logical db, name) is in the closure (after [`Closure::finish`]).
    pub fn wants_logical(&self, logical_db: u32, name: &[u8]) -> bool {
        match self.ids.get(&(logical_db, name.to_vec())) {
            Some(&i) => self.selected[i as usize],
            None => self.matches(logical_db, name),
        }
    }

    /// [`Closure::wants_logical`] for a key in physical db `db` now.
    pub fn wants(&self, db: u32, name: &[u8]) -> bool {
        self.wants_logical(self.logical(db), name)
    }

    /// Keys stored (seen in linking commands), and how many of them are in the closure.
    pub fn sizes(&self) -> (usize, usize) {
        (self.ids.len(), self.selected.iter().filter(|s| **s).count())
    }
}

// The hash Redis Cluster slots keys by; partitions hash the whole name (no hash tags: a
// partition needs spreading, not co-location, which the linking already gives).
pub use crate::restore::outputs::slots::crc16;

/// The partition of a key seen in no linking command: its hash slot modulo `n`. By name only,
/// so a key keeps its partition through MOVE and SWAPDB (which change its db, not its name).
pub fn partition_of(name: &[u8], n: u32) -> u32 {
    (crc16(name) % 16384) as u32 % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(p: &[&str], db: Option<u32>) -> Selection {
        Selection {
            patterns: p.iter().map(|s| s.as_bytes().to_vec()).collect(),
            db,
        }
    }

    #[test]
    fn components_and_swapdb() {
        let mut c = Closure::new(sel(&["want*"], None));
        c.link([(0, &b"a"[..]), (0, b"b")]);
        c.link([(0, &b"b"[..]), (0, b"want1")]);
        c.link([(0, &b"x"[..]), (0, b"y")]);
        c.link([(1, &b"p"[..]), (1, b"q")]);
        c.swapdb(0, 1);
        // Physical db 0 now holds logical db 1: p is linked with want2 there.
        c.link([(0, &b"p"[..]), (0, b"want2")]);
        c.finish();
        assert!(c.wants(0, b"a") && c.wants(0, b"b") && c.wants(0, b"want1"));
        assert!(!c.wants(0, b"x") && !c.wants(0, b"y"));
        assert!(c.wants_logical(1, b"q") && !c.wants_logical(0, b"q"));
        assert!(c.wants(3, b"want-alone") && !c.wants(3, b"other"));
        assert_eq!(c.sizes(), (8, 6));
    }

    #[test]
    fn touched_holds_exactly_the_named_keys() {
        let mut c = Closure::touched();
        c.link([(0, &b"alone"[..])]);
        c.link([(0, &b"a"[..]), (3, b"b")]);
        c.finish();
        assert!(c.wants(0, b"alone") && c.wants(0, b"a") && c.wants(3, b"b"));
        assert!(!c.wants(0, b"b") && !c.wants(0, b"never") && !c.wants(3, b"alone"));
        assert_eq!(c.sizes(), (3, 3));
    }

    #[test]
    fn db_selection_follows_swapdb() {
        let mut c = Closure::new(sel(&[], Some(0)));
        c.swapdb(0, 1);
        c.finish();
        // --db 0 at the restore point is what was db 1 at the base.
        assert!(c.wants_logical(1, b"k") && !c.wants_logical(0, b"k"));
    }

    #[test]
    fn partitions_follow_components() {
        // The cluster spec's check value.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        let mut c = Closure::new(Selection::default());
        c.link([(0, &b"a"[..]), (0, b"b")]);
        c.link([(0, &b"b"[..]), (3, b"c")]);
        let of_id = c.component_partitions(4);
        let parts: Vec<Closure> = (0..4)
            .map(|p| {
                let mut k = c.clone();
                k.keep_partition(4, p, &of_id);
                k
            })
            .collect();
        let owners = |db: u32, k: &[u8]| parts.iter().filter(|c| c.wants(db, k)).count();
        for (db, k) in [(0, &b"a"[..]), (0, b"b"), (3, b"c"), (0, b"x"), (5, b"y")] {
            assert_eq!(owners(db, k), 1, "{db} {k:?}");
        }
        let home = |db: u32, k: &[u8]| parts.iter().position(|c| c.wants(db, k));
        assert_eq!(home(0, b"a"), home(0, b"b"));
        assert_eq!(home(0, b"a"), home(3, b"c"));
        assert_eq!(home(0, b"x"), Some(partition_of(b"x", 4) as usize));
    }
}
