//! Region and credentials from the AWS shared files (`~/.aws/credentials`, `~/.aws/config`),
//! which every AWS tool reads and `object_store` does not: it reads only environment variables
//! and the instance/container metadata endpoints.
//!
//! What is read, as the AWS CLI does: the profile `AWS_PROFILE` (else `default`); static keys
//! (`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`) from the credentials file,
//! else from the config file; `region` from the config file (section `[profile NAME]`, or
//! `[default]`), else from the credentials file. File locations follow
//! `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE`. Environment variables always win: the
//! caller only fills in what they left unset.
//!
//! Not supported: profiles that get credentials from elsewhere (`role_arn`, `sso_*`,
//! `credential_process`, `web_identity_token_file`). When keys are needed from such a profile,
//! that is an error naming the way out (export the keys), rather than a silent fall-through to
//! the metadata endpoint and a confusing "access denied" minutes later. Rejected: the AWS SDK for Rust, which does all of
//! this but would add some forty crates for one lookup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What the files say for one profile. Secrets are never printed.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Profile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    /// Why the profile has no static keys when it gets them some other way (`role_arn`…): the
    /// error to give if keys are needed from it.
    pub no_keys: Option<String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "…"))
            .field("region", &self.region)
            .field("no_keys", &self.no_keys)
            .finish()
    }
}

/// Keys of a profile that mean "credentials come from somewhere else".
const INDIRECT: &[&str] = &[
    "role_arn",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
];

/// The profile the environment selects, from the files the environment points at (or the
/// defaults under `$HOME/.aws`). `Ok(None)` when neither file exists and no profile was asked
/// for by name: nothing to use, nothing wrong.
pub fn load_from_env() -> Result<Option<Profile>, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let named = std::env::var("AWS_PROFILE")
        .or_else(|_| std::env::var("AWS_DEFAULT_PROFILE"))
        .ok();
    load(
        file("AWS_SHARED_CREDENTIALS_FILE", "credentials").as_deref(),
        file("AWS_CONFIG_FILE", "config").as_deref(),
        named.as_deref(),
    )
}

/// `profile`: the name asked for (None: `default`, which may be absent without error).
pub fn load(
    credentials: Option<&Path>,
    config: Option<&Path>,
    profile: Option<&str>,
) -> Result<Option<Profile>, String> {
    let name = profile.unwrap_or("default");
    let read = |p: Option<&Path>| -> Result<Option<(PathBuf, String)>, String> {
        let Some(p) = p else { return Ok(None) };
        match std::fs::read_to_string(p) {
            Ok(t) => Ok(Some((p.to_path_buf(), t))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!(
                "cannot read {}: {e}; fix its permissions, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                p.display()
            )),
        }
    };
    let creds = read(credentials)?;
    let conf = read(config)?;
    // The credentials file names sections `[name]`; the config file `[profile name]`, except
    // `[default]`.
    let in_creds = creds.as_ref().and_then(|(_, t)| sections(t).remove(name));
    let conf_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    let in_conf = conf
        .as_ref()
        .and_then(|(_, t)| sections(t).remove(&conf_section));
    if in_creds.is_none() && in_conf.is_none() {
        if profile.is_none() {
            return Ok(None);
        }
        let looked: Vec<String> = [&creds, &conf]
            .into_iter()
            .flatten()
            .map(|(p, _)| p.display().to_string())
            .collect();
        return Err(format!(
            "AWS profile '{name}' (AWS_PROFILE) is in none of the AWS files ({}); add it, or set AWS_PROFILE to a profile they have",
            if looked.is_empty() {
                "there are none".to_string()
            } else {
                looked.join(", ")
            }
        ));
    }
    let get = |k: &str,
               first: &Option<HashMap<String, String>>,
               then: &Option<HashMap<String, String>>| {
        first
            .as_ref()
            .and_then(|s| s.get(k))
            .or_else(|| then.as_ref().and_then(|s| s.get(k)))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let mut p = Profile {
        access_key_id: get("aws_access_key_id", &in_creds, &in_conf),
        secret_access_key: get("aws_secret_access_key", &in_creds, &in_conf),
        session_token: get("aws_session_token", &in_creds, &in_conf),
        region: get("region", &in_conf, &in_creds),
        no_keys: None,
    };
    // Only an error if the keys are needed from the files (the environment may have them).
    if p.access_key_id.is_some() != p.secret_access_key.is_some() {
        p.no_keys = Some(format!(
            "AWS profile '{name}' has only one of aws_access_key_id and aws_secret_access_key; it needs both"
        ));
        p.access_key_id = None;
        p.secret_access_key = None;
    } else if p.access_key_id.is_none() {
        if let Some(k) = INDIRECT
            .iter()
            .find(|k| get(k, &in_creds, &in_conf).is_some())
        {
            p.no_keys = Some(format!(
                "AWS profile '{name}' gets its credentials through {k}, which flashback does not support; \
                 export static ones instead, e.g. eval \"$(aws configure export-credentials --profile {name} --format env)\""
            ));
        }
    }
    Ok(Some(p))
}

/// `[section]` → key → value, for the INI dialect of the AWS files: `#` and `;` comments,
/// `key = value`, keys case-insensitive. Indented lines continue a nested block (`s3 =` then
/// `  addressing_style = path`), which holds nothing read here, so they are skipped.
fn sections(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        if raw.starts_with([' ', '\t']) {
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(section), Some((k, v))) = (&current, line.split_once('=')) else {
            continue;
        };
        out.entry(section.clone())
            .or_default()
            .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(creds: &str, conf: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let (c, f) = (d.path().join("credentials"), d.path().join("config"));
        std::fs::write(&c, creds).unwrap();
        std::fs::write(&f, conf).unwrap();
        (d, c, f)
    }

    const CREDS: &str = "\
# comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secretdefault

[backup]
aws_access_key_id=AKIDBACKUP
aws_secret_access_key=secretbackup
aws_session_token = tok
";
    const CONF: &str = "\
[default]
region = eu-west-1

[profile backup]
region = us-west-2
s3 =
  addressing_style = path

[profile viarole]
role_arn = arn:aws:iam::1:role/x
source_profile = default
";

    #[test]
    fn default_and_named_profiles_from_both_files() {
        let (_d, c, f) = files(CREDS, CONF);
        let p = load(Some(&c), Some(&f), None).unwrap().unwrap();
        assert_eq!(p.access_key_id.as_deref(), Some("AKIDDEFAULT"));
        assert_eq!(p.secret_access_key.as_deref(), Some("secretdefault"));
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));
        let p = load(Some(&c), Some(&f), Some("backup")).unwrap().unwrap();
        assert_eq!(p.access_key_id.as_deref(), Some("AKIDBACKUP"));
        assert_eq!(p.session_token.as_deref(), Some("tok"));
        assert_eq!(p.region.as_deref(), Some("us-west-2"));
        assert!(!format!("{p:?}").contains("secretbackup"), "{p:?}");
    }

    #[test]
    fn missing_files_are_nothing_but_a_missing_named_profile_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let (c, f) = (d.path().join("nope1"), d.path().join("nope2"));
        assert_eq!(load(Some(&c), Some(&f), None).unwrap(), None);
        let e = load(Some(&c), Some(&f), Some("prod")).unwrap_err();
        assert!(e.contains("'prod'") && e.contains("there are none"), "{e}");
        let (_d, c, f) = files(CREDS, CONF);
        let e = load(Some(&c), Some(&f), Some("prod")).unwrap_err();
        assert!(e.contains("credentials") && e.contains("config"), "{e}");
    }

    #[test]
    fn indirect_and_half_profiles_are_clear_errors() {
        let (_d, c, f) = files(CREDS, CONF);
        let p = load(Some(&c), Some(&f), Some("viarole")).unwrap().unwrap();
        let e = p.no_keys.unwrap();
        assert!(
            e.contains("role_arn") && e.contains("export-credentials"),
            "{e}"
        );
        let (_d, c, f) = files("[half]\naws_access_key_id = A\n", "");
        let p = load(Some(&c), Some(&f), Some("half")).unwrap().unwrap();
        assert!(p.no_keys.unwrap().contains("needs both"));
        assert_eq!(p.access_key_id, None, "half a key pair is not used");
    }

    #[test]
    fn region_only_profiles_are_fine() {
        let (_d, c, f) = files("", "[profile r]\nregion = ap-south-1\n");
        let p = load(Some(&c), Some(&f), Some("r")).unwrap().unwrap();
        assert_eq!(p.region.as_deref(), Some("ap-south-1"));
        assert_eq!(p.access_key_id, None);
    }
}
