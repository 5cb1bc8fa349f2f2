//! The pull parser: [`RdbReader::next`] yields one [`Item`] at a time. An entry's value is left
//! unread until the caller asks for it ([`RdbReader::summarize`] or [`RdbReader::visit`]);
//! calling `next` again skips it. So a caller pays only for what it looks at: `inspect` never
//! copies a string value, a key-level restore decodes only the keys it wants.

use crate::error::{Error, Result};
use crate::input::Input;
use crate::{EntryInfo, Header, Item, Kind, Magic, ValueSummary, Visitor};
use std::io::Read;
use std::path::Path;

pub(crate) const OP_SLOT_IMPORT: u8 = 0xF3;
pub(crate) const OP_SLOT_INFO: u8 = 0xF4;
pub(crate) const OP_FUNCTION2: u8 = 0xF5;
pub(crate) const OP_FUNCTION_PRE_GA: u8 = 0xF6;
pub(crate) const OP_MODULE_AUX: u8 = 0xF7;
pub(crate) const OP_IDLE: u8 = 0xF8;
pub(crate) const OP_FREQ: u8 = 0xF9;
pub(crate) const OP_AUX: u8 = 0xFA;
pub(crate) const OP_RESIZEDB: u8 = 0xFB;
pub(crate) const OP_EXPIRETIME_MS: u8 = 0xFC;
pub(crate) const OP_EXPIRETIME: u8 = 0xFD;
pub(crate) const OP_SELECTDB: u8 = 0xFE;
pub(crate) const OP_EOF: u8 = 0xFF;

/// A streaming RDB reader over any `Read` (wrap nothing: it buffers itself).
pub struct RdbReader<R> {
    pub(crate) inp: Input<R>,
    header: Header,
    db: u64,
    pub(crate) pending: Option<EntryInfo>,
    pub(crate) key: Vec<u8>,
    capture: bool,
    done: bool,
    /// Scratch buffers for values, reused across entries.
    pub(crate) s1: Vec<u8>,
    pub(crate) s2: Vec<u8>,
}

impl RdbReader<std::fs::File> {
    /// Opens a file; errors name it.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|source| Error::Io {
            at: crate::error::At {
                file: Some(name.clone()),
                offset: 0,
            },
            source,
        })?;
        RdbReader::with_name(f, Some(name))
    }
}

impl<R: Read> RdbReader<R> {
    /// Reads the header (magic and version) from `r`.
    pub fn new(r: R) -> Result<Self> {
        Self::with_name(r, None)
    }

    /// Like [`RdbReader::new`], with a file name for error messages.
    pub fn with_name(r: R, file: Option<String>) -> Result<Self> {
        let mut inp = Input::new(r, file);
        let raw: [u8; 9] = inp.array("the 9-byte header (REDIS0nnn or VALKEYnnn)")?;
        let header = parse_header(raw).map_err(|what| inp.corrupt(0, what))?;
        let supported = match header.magic {
            Magic::Redis => (1..=12).contains(&header.version),
            Magic::Valkey => header.version == 80,
        };
        if !supported {
            return Err(Error::Unsupported {
                at: inp.at(0),
                what: format!(
                    "RDB version {} ({}) is not one this reader knows (REDIS0001..REDIS0012 and VALKEY080): \
                     a newer server wrote it; load it with that server instead",
                    header.version,
                    String::from_utf8_lossy(&raw)
                ),
            });
        }
        Ok(RdbReader {
            inp,
            header,
            db: 0,
            pending: None,
            key: Vec::new(),
            capture: false,
            done: false,
            s1: Vec::new(),
            s2: Vec::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes consumed so far (the offset of the next byte).
    pub fn offset(&self) -> u64 {
        self.inp.offset()
    }

    /// Records the exact bytes of each item from now on, for [`RdbReader::raw`].
    pub fn capture_raw(&mut self, on: bool) {
        self.capture = on;
    }

    /// The bytes of the last complete item exactly as in the file (with
    /// [`RdbReader::capture_raw`] on): for an entry, from its first opcode (EXPIRETIME_MS,
    /// IDLE, FREQ or the type byte) to the end of its value, once the value was read.
    pub fn raw(&self) -> &[u8] {
        &self.inp.raw
    }

    /// The key of the entry [`RdbReader::next`] last returned.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The next item; None after [`Item::End`].
    #[allow(clippy::should_implement_trait)] // fallible, and items borrow nothing: not an Iterator
    pub fn next(&mut self) -> Result<Option<Item>> {
        if self.pending.is_some() {
            self.summarize()?;
        }
        if self.done {
            return Ok(None);
        }
        let start = self.inp.offset();
        if self.capture {
            self.inp.capture_start();
        }
        let (mut expire_ms, mut idle, mut freq) = (None, None, None);
        loop {
            let at = self.inp.offset();
            let op = self
                .inp
                .u8("an opcode, a value type or the EOF marker (0xFF)")?;
            let prefixed = expire_ms.is_some() || idle.is_some() || freq.is_some();
            let item = match op {
                OP_EXPIRETIME_MS => {
                    expire_ms = Some(self.inp.ms("an expiry time in ms")?);
                    continue;
                }
                OP_EXPIRETIME => {
                    let s = i32::from_le_bytes(self.inp.array("an expiry time in seconds")?);
                    expire_ms = Some(i64::from(s) * 1000);
                    continue;
                }
                OP_IDLE => {
                    idle = Some(self.inp.num("an LRU idle time")?);
                    continue;
                }
                OP_FREQ => {
                    freq = Some(self.inp.u8("an LFU frequency")?);
                    continue;
                }
                t if crate::is_value_type(t, self.header.magic) => {
                    self.inp.string(&mut self.key, "the key of an entry")?;
                    let info = EntryInfo {
                        db: self.db,
                        offset: start,
                        rdb_type: t,
                        kind: crate::kind_of(t, self.header.magic),
                        expire_ms,
                        idle,
                        freq,
                    };
                    self.pending = Some(info);
                    return Ok(Some(Item::Entry(info)));
                }
                _ if prefixed => {
                    return Err(self.inp.corrupt(
                        at,
                        format!("opcode {op:#04x} after an entry's expiry/LRU/LFU, where its value type was expected"),
                    ))
                }
                OP_EOF => {
                    let computed = self.inp.crc();
                    let stored = if self.header.magic == Magic::Redis && self.header.version < 5 {
                        None // checksums came with RDB 5
                    } else {
                        self.inp.crc_off();
                        let at = self.inp.offset();
                        let stored = u64::from_le_bytes(self.inp.array("the 8-byte CRC-64 after the EOF marker")?);
                        if stored != 0 && stored != computed {
                            return Err(Error::Checksum {
                                at: self.inp.at(at),
                                stored,
                                computed,
                            });
                        }
                        Some(stored)
                    };
                    self.done = true;
                    Item::End { stored_crc: stored, computed_crc: computed }
                }
                OP_SELECTDB => {
                    self.db = self.inp.num("a db number")?;
                    Item::SelectDb(self.db)
                }
                OP_RESIZEDB => Item::ResizeDb {
                    keys: self.inp.num("the key count of RESIZEDB")?,
                    expires: self.inp.num("the expiry count of RESIZEDB")?,
                },
                OP_SLOT_INFO => Item::SlotInfo {
                    slot: self.inp.num("a slot number")?,
                    keys: self.inp.num("a slot's key count")?,
                    expires: self.inp.num("a slot's expiry count")?,
                },
                OP_SLOT_IMPORT if self.header.magic == Magic::Valkey => {
                    let mut job = Vec::new();
                    self.inp.string(&mut job, "a slot import job name")?;
                    let n = self.inp.num("a slot import's range count")?;
                    let mut ranges = Vec::new();
                    for _ in 0..n {
                        let a = self.inp.num("a slot range start")?;
                        let b = self.inp.num("a slot range end")?;
                        ranges.push((a, b));
                    }
                    Item::SlotImport { job, ranges }
                }
                OP_AUX => {
                    let (mut k, mut v) = (Vec::new(), Vec::new());
                    self.inp.string(&mut k, "an AUX field name")?;
                    self.inp.string(&mut v, "an AUX field value")?;
                    Item::Aux { key: k, value: v }
                }
                OP_FUNCTION2 => {
                    let mut code = Vec::new();
                    self.inp.string(&mut code, "a function library's code")?;
                    Item::Function(code)
                }
                OP_FUNCTION_PRE_GA => {
                    return Err(Error::Unsupported {
                        at: self.inp.at(at),
                        what: "function library in the Redis 7.0 release-candidate format (opcode 0xF6), which no released server reads".into(),
                    })
                }
                OP_MODULE_AUX => {
                    let id = self.inp.num("a module id")?;
                    let when_at = self.inp.offset();
                    let when_opcode = self.inp.num("a module AUX 'when' opcode")?;
                    if when_opcode != 2 {
                        return Err(self.inp.corrupt(when_at, format!("module AUX 'when' opcode {when_opcode} (expected 2, an unsigned integer)")));
                    }
                    let when = self.inp.num("a module AUX 'when'")?;
                    let module = crate::module_name(id);
                    self.module_opcodes(&module, None)?;
                    Item::ModuleAux { module, encver: id & 1023, when }
                }
                _ => {
                    return Err(self.inp.corrupt(
                        at,
                        format!("unknown opcode or value type {op} ({op:#04x})"),
                    ))
                }
            };
            self.inp.capture_stop();
            return Ok(Some(item));
        }
    }

    /// Reads (and checks) the pending entry's value without handing out its elements.
    pub fn summarize(&mut self) -> Result<ValueSummary> {
        self.value(None)
    }

    /// [`RdbReader::summarize`], handing the entry's bytes (from its first opcode, as
    /// [`RdbReader::raw`] would hold them) to `spill` as they are read instead of keeping them:
    /// an entry of any size costs the reader's buffer, not its size. Capture must be on. The
    /// outer error is the file's; the inner one is `spill`'s first (the value is read to its
    /// end regardless, so the reader stays usable).
    pub fn summarize_spilled(
        &mut self,
        mut spill: crate::input::Spill,
    ) -> Result<std::io::Result<ValueSummary>> {
        let head = spill(&self.inp.raw);
        self.inp.raw.clear();
        self.inp.spill = Some(spill);
        self.inp.spill_err = head.err();
        let r = self.summarize();
        self.inp.spill = None;
        let err = self.inp.spill_err.take();
        let v = r?;
        Ok(match err {
            Some(e) => Err(e),
            None => Ok(v),
        })
    }

    /// Reads the pending entry's value, element by element, into `v`.
    pub fn visit(&mut self, v: &mut dyn Visitor) -> Result<ValueSummary> {
        self.value(Some(v))
    }

    fn value(&mut self, v: Option<&mut (dyn Visitor + '_)>) -> Result<ValueSummary> {
        let Some(info) = self.pending.take() else {
            return Err(Error::Unsupported {
                at: self.inp.at(self.inp.offset()),
                what: "no entry value to read here: call next() first".into(),
            });
        };
        let (elements, module) = self.decode_value(&info, v)?;
        if elements == 0 && matches!(info.kind, Kind::List | Kind::Set | Kind::ZSet | Kind::Hash) {
            // Redis skips these on load as corrupt (RDB_LOAD_ERR_EMPTY_KEY): no server writes one.
            return Err(self.inp.corrupt(
                info.offset,
                format!(
                    "{} '{}' is empty, which no server writes (expected at least one element)",
                    info.kind.name(),
                    String::from_utf8_lossy(&self.key)
                ),
            ));
        }
        self.inp.capture_stop();
        let end = self.inp.offset();
        Ok(ValueSummary {
            kind: info.kind,
            elements,
            entry_bytes: end - info.offset,
            module,
        })
    }

    /// Walks a module's opcode-tagged value (RDB_MODULE_OPCODE_*) up to its EOF opcode.
    pub(crate) fn module_opcodes(
        &mut self,
        module: &str,
        mut v: Option<&mut (dyn Visitor + '_)>,
    ) -> Result<u64> {
        let mut n = 0u64;
        loop {
            let at = self.inp.offset();
            match self.inp.num("a module value opcode")? {
                0 => return Ok(n),
                1 | 2 => {
                    let x = self.inp.num("a module integer")?;
                    if let Some(v) = v.as_deref_mut() {
                        v.module_field(crate::ModuleField::Int(x));
                    }
                }
                3 => {
                    let x = f32::from_le_bytes(self.inp.array("a module float")?);
                    if let Some(v) = v.as_deref_mut() {
                        v.module_field(crate::ModuleField::Float(f64::from(x)));
                    }
                }
                4 => {
                    let x = f64::from_le_bytes(self.inp.array("a module double")?);
                    if let Some(v) = v.as_deref_mut() {
                        v.module_field(crate::ModuleField::Double(x));
                    }
                }
                5 => match v.as_deref_mut() {
                    Some(v) => {
                        let mut s = std::mem::take(&mut self.s1);
                        let r = self.inp.string(&mut s, "a module string");
                        if r.is_ok() {
                            v.module_field(crate::ModuleField::String(&s));
                        }
                        self.s1 = s;
                        r?;
                    }
                    None => {
                        self.inp.skip_string("a module string")?;
                    }
                },
                op => {
                    return Err(self.inp.corrupt(
                        at,
                        format!("module '{module}' value: unknown opcode {op} (expected 0..5: EOF, integers, float, double, string)"),
                    ))
                }
            }
            n += 1;
        }
    }
}

fn parse_header(raw: [u8; 9]) -> std::result::Result<Header, String> {
    let (magic, digits) = if raw.starts_with(b"REDIS") {
        (Magic::Redis, &raw[5..])
    } else if raw.starts_with(b"VALKEY") {
        (Magic::Valkey, &raw[6..])
    } else {
        return Err(format!(
            "not an RDB file: starts with {:?}, expected REDIS0nnn or VALKEYnnn",
            String::from_utf8_lossy(&raw)
        ));
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "not an RDB file: header {:?} has no version number",
            String::from_utf8_lossy(&raw)
        ));
    }
    let version = digits
        .iter()
        .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
    Ok(Header {
        magic,
        version,
        raw,
    })
}
