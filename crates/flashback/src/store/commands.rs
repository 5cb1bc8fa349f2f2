//! The source's `COMMAND` reply, stored once per generation (`layout::commands_key`), so that
//! readers of the log (`flashback history`) find the keys of every command the server knew when
//! the generation started, modules' included, instead of only the commands Flashback was
//! written for ([`crate::commands::CommandTable::builtin`]).
//!
//! The object is a checked envelope (magic `FBCMDTAB`) around the reply's raw RESP bytes,
//! exactly as the server sent them: a parsed-then-reencoded copy was rejected because a reader
//! of a newer Flashback may want fields this one ignores. A generation without it (the ACL
//! forbade COMMAND, or an agent before this object existed) reads with the builtin table.

use super::{layout, Store, StoreError};
use crate::commands::{CommandTable, CommandTableError};
use bytes::Bytes;
use flashback_format::{envelope, resp};
use object_store::ObjectStoreExt;

pub const MAGIC: [u8; 8] = *b"FBCMDTAB";
pub const VERSION: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CommandsObjectError {
    #[error(transparent)]
    Format(#[from] flashback_format::Error),
    #[error("{file}: corrupt at byte {offset}: the payload is not one RESP reply ({what})")]
    Resp {
        file: String,
        offset: u64,
        what: String,
    },
    #[error("{file}: {err}")]
    Table {
        file: String,
        err: CommandTableError,
    },
}

/// The envelope around a raw `COMMAND` reply.
pub fn encode(reply: &[u8]) -> Vec<u8> {
    envelope::encode(&MAGIC, VERSION, reply)
}

/// Checks the envelope and parses the reply into a table (the builtin filling in).
pub fn decode(file: &str, bytes: &[u8]) -> Result<CommandTable, CommandsObjectError> {
    let (_, payload) = envelope::decode(file, &MAGIC, VERSION, bytes)?;
    let bad = |offset: usize, what: String| CommandsObjectError::Resp {
        file: file.to_string(),
        offset: (envelope::HEADER_LEN + offset) as u64,
        what,
    };
    let n = resp::check(payload).map_err(|e| bad(0, e.to_string()))?;
    if n != payload.len() {
        return Err(bad(
            n,
            format!("{} bytes after the reply", payload.len() - n),
        ));
    }
    let frame = resp::parse(&Bytes::copy_from_slice(payload)).map_err(|e| bad(0, e.to_string()))?;
    CommandTable::from_command_reply(&frame).map_err(|err| CommandsObjectError::Table {
        file: file.to_string(),
        err,
    })
}

/// The command table of generation `gen`: its stored reply, or the builtin table when the
/// generation has none or it cannot be read (with a warning naming the object).
pub async fn command_table(store: &Store, source: &str, gen: &str) -> CommandTable {
    let key = layout::commands_key(source, gen);
    let bytes = match store.os.get(&key).await {
        Ok(r) => r.bytes().await.map_err(StoreError::from),
        Err(object_store::Error::NotFound { .. }) => {
            tracing::debug!("{key}: absent; using the builtin command table");
            return CommandTable::builtin();
        }
        Err(e) => Err(StoreError::from(e)),
    };
    let table = bytes
        .map_err(|e| e.to_string())
        .and_then(|b| decode(key.as_ref(), &b).map_err(|e| e.to_string()));
    match table {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(
                "{e}; using the builtin command table for generation {gen} (module commands' keys are unknown; `flashback verify` checks this object)"
            );
            CommandTable::builtin()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let reply = b"*1\r\n*6\r\n$7\r\nmod.set\r\n:-3\r\n*1\r\n+write\r\n:1\r\n:1\r\n:1\r\n";
        let obj = encode(reply);
        let t = decode("c", &obj).unwrap();
        assert_eq!(t.key_positions(&[b"MOD.SET", b"k", b"v"]), [1]);
        assert!(t.get(b"mod.set").unwrap().from_server);
        let mut bad = obj.clone();
        bad[20] ^= 1;
        assert!(decode("c", &bad)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        let short = encode(&reply[..reply.len() - 3]);
        let e = decode("gen/commands.resp", &short).unwrap_err().to_string();
        assert!(
            e.starts_with("gen/commands.resp: corrupt at byte 16"),
            "{e}"
        );
        let two = encode(&[&reply[..], b"+OK\r\n"].concat());
        let e = decode("c", &two).unwrap_err().to_string();
        assert!(e.contains("5 bytes after the reply"), "{e}");
    }
}
