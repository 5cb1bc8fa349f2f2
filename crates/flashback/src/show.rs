//! How secrets and user data appear in messages: the one place that renders a URL or a key
//! name for people. Every error, note, log line and summary goes through these two functions,
//! so a password never reaches a terminal or a log file, and a key name (arbitrary bytes, up to
//! 512 MB) can neither flood a line nor smuggle control bytes into it.

use std::fmt::Write;

/// Bytes of a key name shown before the rest is summarised as "… (N bytes)".
pub const KEY_SHOWN: usize = 120;

/// `s` (any URL, or a string the user meant as one, well-formed or not) with the password of
/// its `user:password@` part replaced by `***`.
///
/// Works on the raw text rather than on a parsed URL because it must also mask what failed to
/// parse ("port 99999", "rediss://" before TLS support): a parser-based mask would have nothing
/// to mask exactly when the error message needs it.
pub fn url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return mask_authority(s);
    };
    let (head, rest) = s.split_at(scheme_end + 3);
    format!("{head}{}", mask_authority(rest))
}

/// Masks `user:password@` at the start of `rest` (up to the first `/`, `?` or `#`). The last `@`
/// of that authority ends the userinfo, as URL parsers read it, so a password holding `@` is
/// masked whole.
fn mask_authority(rest: &str) -> String {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some(at) = authority.rfind('@') else {
        return rest.to_string();
    };
    let (userinfo, host) = authority.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***{host}{tail}"),
        // Only a user name (no ':'): nothing secret, unless it is a token-style URL
        // (`redis://TOKEN@host`), which some managed services use: mask that too.
        None if userinfo.len() >= 20 => format!("***{host}{tail}"),
        None => rest.to_string(),
    }
}

/// A key name for a message: printable ASCII as is, `\r` `\n` `\t` `\\` `"` escaped, every other
/// byte as `\xNN`; longer than [`KEY_SHOWN`] bytes, cut there with "… (N bytes)". Quoted, so an
/// empty key or one with spaces reads unambiguously.
pub fn key(k: &[u8]) -> String {
    let shown = &k[..k.len().min(KEY_SHOWN)];
    let mut out = String::with_capacity(shown.len() + 16);
    out.push('"');
    for &b in shown {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    if k.len() > KEY_SHOWN {
        let _ = write!(out, "… ({} bytes)", k.len());
    }
    out
}

/// A command line from the stream or a reply (argv of bytes) for a message: its name and up to
/// three arguments, each through [`key`].
pub fn argv<A: AsRef<[u8]>>(args: &[A]) -> String {
    let mut parts: Vec<String> = args.iter().take(4).map(|a| key(a.as_ref())).collect();
    if args.len() > 4 {
        parts.push(format!("… ({} arguments)", args.len()));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_show_the_password() {
        let cases = [
            (
                "redis://u:Zq9SecretPw@127.0.0.1:1",
                "redis://u:***@127.0.0.1:1",
            ),
            (
                "rediss://repl:replpw@h:6380/2",
                "rediss://repl:***@h:6380/2",
            ),
            ("redis://:pw@h", "redis://:***@h"),
            ("redis://u:p@ss@h:1", "redis://u:***@h:1"),
            (
                "redis://u:pw@127.0.0.1:99999",
                "redis://u:***@127.0.0.1:99999",
            ),
            ("u:pw@host:1", "u:***@host:1"),
            ("redis://h:1", "redis://h:1"),
            ("redis://user@h:1", "redis://user@h:1"),
            ("s3://bucket/pre@fix", "s3://bucket/pre@fix"),
            ("./flashback-data", "./flashback-data"),
        ];
        for (input, want) in cases {
            assert_eq!(url(input), want, "{input}");
        }
        assert!(!url("redis://abcdefghijklmnopqrstuvwxyz@h:1").contains("abcdef"));
    }

    #[test]
    fn keys_are_escaped_and_capped() {
        assert_eq!(key(b"user:1"), "\"user:1\"");
        assert_eq!(key(b"a\r\nb\x00\xff\"\\"), "\"a\\r\\nb\\x00\\xff\\\"\\\\\"");
        assert_eq!(key(b""), "\"\"");
        let big = vec![b'k'; 1_000_000];
        let s = key(&big);
        assert!(s.len() < KEY_SHOWN + 40, "{}", s.len());
        assert!(s.ends_with("… (1000000 bytes)"), "{s}");
        assert_eq!(argv(&[&b"SET"[..], b"k\n", b"v"]), "\"SET\" \"k\\n\" \"v\"");
    }
}
