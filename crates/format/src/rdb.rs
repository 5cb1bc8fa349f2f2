//! Just enough of the RDB format to identify a snapshot: its version (`REDIS0010`, `REDIS0011`,
//! `REDIS0012`, Valkey 9's `VALKEY080`) and its leading AUX fields (`redis-ver`/`valkey-ver`,
//! `repl-id`, `repl-offset`, `repl-stream-db`), plus Redis' CRC-64 (Jones, reflected) that ends
//! every RDB and DUMP payload. Restore needs the version to pick a redis-server able to load it.

use crate::error::Result;

/// Header facts of an RDB file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdbInfo {
    /// "REDIS" or "VALKEY".
    pub magic: String,
    /// The number after the magic (10 for Redis 7.0, 11 for 7.2/Valkey 8, 12 for 7.4+, 80 for Valkey 9).
    pub version: u32,
    /// AUX fields before the first non-AUX opcode, in order, as (key, value) bytes.
    pub aux: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RdbInfo {
    pub fn aux_str(&self, key: &str) -> Option<String> {
        self.aux.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads the header and leading AUX fields from the first bytes of an RDB (a few KiB suffice).
/// AUX values encoded as integers (RDB_ENC_INT8/16/32) are returned as decimal text.
pub fn peek(_file: &str, _prefix: &[u8]) -> Result<RdbInfo> {
    todo!()
}

/// Redis' CRC-64 (crc64-jones, reflected, init 0), incrementally: `crc = crc64(crc, chunk)`.
/// crc64(0, b"123456789") == 0xe9c6d914c4b8d9ca.
pub fn crc64(_crc: u64, _data: &[u8]) -> u64 {
    todo!()
}

/// Checks an RDB file's trailer: last 9 bytes are 0xFF + CRC-64 LE of everything before the
/// 8 CRC bytes; a CRC of 0 means the server ran with `rdbchecksum no` and is accepted.
/// `crc_so_far` is crc64 over all bytes except the last 8; `trailer` is the last 9 bytes.
pub fn check_trailer(_file: &str, _len: u64, _crc_so_far: u64, _trailer: &[u8]) -> Result<()> {
    todo!()
}
