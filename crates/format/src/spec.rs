//! Building segments from a description, for tests and fixtures (the role `file_spec.go`
//! plays in superfly/ltx): say which commands arrive when, and where blocks are cut; offsets,
//! RESP bytes and boundaries are worked out here, so a fixture cannot have a gap by mistake.
//!
//! ```
//! use flashback_format::segment::{Item, Origin, Sealed, SegmentReader};
//! use flashback_format::spec::SegmentSpec;
//!
//! let mut spec = SegmentSpec::new("8f0c2a5b6e1d4c3b9a7f8e6d5c4b3a2918273645", 100, 1_000, Origin::NewGeneration);
//! spec.command(1_001, 0, &["SET", "k", "v"]).cut(1_005);
//! let bytes = spec.build_sealed(1_010).unwrap();
//! let mut r = SegmentReader::new("fixture.seg", &bytes[..], bytes.len() as u64, Sealed::Yes);
//! let block = r.next_block().unwrap().unwrap();
//! let Item::Record(rec) = &r.scanner().decode(&block).unwrap()[0] else { panic!() };
//! assert_eq!(rec.resp, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
//! ```

use crate::segment::{Origin, Record, SegmentHeader, SegmentSummary, SegmentWriter, WriterOptions};

/// The RESP array of bulk strings for `argv`, as a primary propagates a command (the one
/// encoder, [`crate::resp::encode_command`], under the name fixtures already use).
pub use crate::resp::encode_command as resp_command;

/// One block of a [`SegmentSpec`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockSpec {
    pub records: Vec<Record>,
    pub covered_through_ms: u64,
    pub flags: u16,
}

/// A segment described block by block. Records go into the open block (the last one); [`cut`]
/// closes it. Blocks never cut are flushed by `build_*` (covered through their last record).
///
/// [`cut`]: SegmentSpec::cut
#[derive(Debug, Clone)]
pub struct SegmentSpec {
    pub header: SegmentHeader,
    /// Closed blocks.
    pub blocks: Vec<BlockSpec>,
    /// Records not yet in a closed block.
    pub open: Vec<Record>,
    pub opts: WriterOptions,
    end_offset: u64,
}

impl SegmentSpec {
    pub fn new(replid: &str, start_offset: u64, created_ms: u64, origin: Origin) -> Self {
        SegmentSpec {
            header: SegmentHeader {
                replid: replid.to_string(),
                start_offset,
                start_db: 0,
                start_in_multi: false,
                created_ms,
                origin,
            },
            blocks: Vec::new(),
            open: Vec::new(),
            opts: WriterOptions::default(),
            end_offset: start_offset,
        }
    }

    /// End offset of the last record added.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// Adds a command that ends a transaction (or is outside one).
    pub fn command<A: AsRef<[u8]>>(&mut self, time_ms: u64, db: u32, argv: &[A]) -> &mut Self {
        self.record(time_ms, db, true, resp_command(argv))
    }

    /// Adds a record with explicit boundary flag and RESP bytes; its end offset follows the
    /// previous record.
    pub fn record(&mut self, time_ms: u64, db: u32, boundary: bool, resp: Vec<u8>) -> &mut Self {
        self.end_offset += resp.len() as u64;
        self.open.push(Record {
            end_offset: self.end_offset,
            time_ms,
            db,
            boundary,
            resp,
        });
        self
    }

    /// Adds `MULTI`, the commands, and `EXEC`, all at `time_ms`; only `EXEC` is a boundary.
    pub fn transaction<A: AsRef<[u8]>>(
        &mut self,
        time_ms: u64,
        db: u32,
        commands: &[&[A]],
    ) -> &mut Self {
        self.record(time_ms, db, false, resp_command(&["MULTI"]));
        for c in commands {
            self.record(time_ms, db, false, resp_command(c));
        }
        self.record(time_ms, db, true, resp_command(&["EXEC"]))
    }

    /// Closes the open block (an empty one is a heartbeat).
    pub fn cut(&mut self, covered_through_ms: u64) -> &mut Self {
        self.cut_with_flags(covered_through_ms, 0)
    }

    pub fn cut_with_flags(&mut self, covered_through_ms: u64, flags: u16) -> &mut Self {
        let records = std::mem::take(&mut self.open);
        self.blocks.push(BlockSpec {
            records,
            covered_through_ms,
            flags,
        });
        self
    }

    /// All records, in order.
    pub fn records(&self) -> Vec<Record> {
        self.blocks
            .iter()
            .flat_map(|b| b.records.iter().cloned())
            .chain(self.open.iter().cloned())
            .collect()
    }

    fn write(&self) -> std::io::Result<SegmentWriter<Vec<u8>>> {
        let mut w = SegmentWriter::new(Vec::new(), &self.header, self.opts.clone())?;
        for b in &self.blocks {
            for r in &b.records {
                w.append(r)?;
            }
            w.flush_block(b.covered_through_ms, b.flags)?;
        }
        if let Some(last) = self.open.last() {
            for r in &self.open {
                w.append(r)?;
            }
            w.flush_block(last.time_ms, 0)?;
        }
        Ok(w)
    }

    /// The bytes of the open tail an agent would have written (no footer).
    pub fn build_tail(&self) -> std::io::Result<Vec<u8>> {
        Ok(self.write()?.get_ref().clone())
    }

    /// The bytes of the sealed segment, sealed at `end_time_ms`.
    pub fn build_sealed(&self, end_time_ms: u64) -> std::io::Result<Vec<u8>> {
        Ok(self.build_sealed_with_summary(end_time_ms)?.0)
    }

    pub fn build_sealed_with_summary(
        &self,
        end_time_ms: u64,
    ) -> std::io::Result<(Vec<u8>, SegmentSummary)> {
        self.write()?.finish(end_time_ms)
    }
}
