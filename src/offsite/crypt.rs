//! Encryption of off-site copies in the age format, so that the standard
//! `age` tool decrypts them without upkeep. The host holds only the public
//! recipients (`encrypt_to`): it can write backups, not read old ones; the
//! identity (secret key) is needed only to restore.
//!
//! An identity pasted where a recipient goes (`AGE-SECRET-KEY-1...`, in
//! upkeep.yaml or a recipients file) is refused wherever it is found, and
//! never echoed: messages say where it is, not what it is.

use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};

use crate::error::bad_input;

/// What an age identity (secret key) starts with; age writes it in upper
/// case, Bech32 reads either case.
const IDENTITY_PREFIX: &str = "age-secret-key-";

/// The hint for an identity given where a recipient goes.
pub const IDENTITY_HINT: &str = "that is an identity; give its recipient, `age-keygen -y` \
     (`age-keygen -y KEYFILE` prints it), and keep the identity off this host: it is needed only \
     to restore (--identity)";

/// The most a recipients file may hold: a few lines each.
const KEY_FILE_LIMIT: u64 = 1 << 20;

/// Whether `text` holds an age identity anywhere, in any case.
pub fn holds_identity(text: &str) -> bool {
    text.to_ascii_lowercase().contains(IDENTITY_PREFIX)
}

/// The public keys a backup is encrypted to.
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
    /// Short, stable names of the keys, recorded in manifests.
    pub fingerprints: Vec<String>,
}

impl Recipients {
    /// Reads `encrypt_to`: each entry an `age1...` public key, or a file of
    /// them (one a line, `#` comments), relative to the folder of
    /// upkeep.yaml. Anything that is not a key is refused, so that a typo
    /// never turns into an upload without encryption.
    pub fn load(entries: &[String], root: &Path) -> Result<Recipients> {
        let mut keys = Vec::new();
        for entry in entries {
            if holds_identity(entry) {
                return Err(bad_input(format!(
                    "backups.offsite.encrypt_to: an entry is an age secret key: {IDENTITY_HINT} \
                     (nothing was uploaded)"
                )));
            }
            if entry.starts_with("age1") {
                keys.push(parse(entry, "backups.offsite.encrypt_to")?);
                continue;
            }
            let path = root.join(entry);
            let text = read_key_file(&path).map_err(|error| {
                bad_input(format!(
                    "backups.offsite.encrypt_to: cannot read recipients file `{}`: {error}; \
                     give an age1... public key or the file of one (nothing was uploaded)",
                    path.display()
                ))
            })?;
            let before = keys.len();
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if holds_identity(line) {
                    return Err(bad_input(format!(
                        "backups.offsite.encrypt_to: {}:{} is an age secret key: {IDENTITY_HINT} \
                         (nothing was uploaded)",
                        path.display(),
                        number + 1
                    )));
                }
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.push(parse(line, &format!("{}:{}", path.display(), number + 1))?);
            }
            if keys.len() == before {
                return Err(bad_input(format!(
                    "backups.offsite.encrypt_to: `{}` holds no age1... public key (nothing was uploaded)",
                    path.display()
                )));
            }
        }
        if keys.is_empty() {
            return Err(bad_input(
                "backups.offsite.encrypt_to is empty: give at least one age1... public key, or remove the key",
            ));
        }
        let fingerprints = keys
            .iter()
            .map(|key| fingerprint(&key.to_string()))
            .collect();
        Ok(Recipients { keys, fingerprints })
    }

    /// `plain`, sealed as one age file to every recipient.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut sealed = Vec::with_capacity(plain.len() + 512);
        let mut writer = self.encrypt(&mut sealed)?;
        writer.write_all(plain)?;
        writer.finish()?;
        Ok(sealed)
    }

    /// Wraps `output` so that what is written to it is encrypted to every
    /// recipient. Call `finish` on the result, or the file is cut short.
    pub fn encrypt<W: Write>(&self, output: W) -> Result<age::stream::StreamWriter<W>> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|key| key as &dyn age::Recipient))
                .map_err(|error| {
                    anyhow!("cannot encrypt to backups.offsite.encrypt_to: {error}")
                })?;
        encryptor
            .wrap_output(output)
            .context("cannot start the encrypted stream")
    }
}

fn parse(text: &str, at: &str) -> Result<age::x25519::Recipient> {
    age::x25519::Recipient::from_str(text).map_err(|error| {
        bad_input(format!(
            "{at}: `{}` is not an age public key ({error}): give an age1... key, as `age-keygen -y` prints it \
             (nothing was uploaded)",
            shorten(text)
        ))
    })
}

/// A recipients file's text, refused when it is not a small
/// text file (`/dev/zero` would be read forever).
fn read_key_file(path: &Path) -> std::io::Result<String> {
    let bytes = crate::fsx::read_at_most(path, KEY_FILE_LIMIT)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// The first 16 hex digits of the key's BLAKE3: enough to tell keys apart
/// in a manifest, nothing to decrypt with.
pub fn fingerprint(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex()[..16].to_string()
}

/// A secret may be pasted by mistake where a key goes: never echo it whole.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(12) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// The secret keys to restore with: an age identity file, as `age-keygen`
/// writes it (`--identity FILE` or `UPKEEP_AGE_IDENTITY`).
pub struct Identities(Vec<Box<dyn age::Identity>>);

impl Identities {
    pub fn load(path: &Path) -> Result<Identities> {
        if holds_identity(&path.to_string_lossy()) {
            bail!(bad_input(
                "--identity (or UPKEEP_AGE_IDENTITY) takes the path of the file that holds the age \
                 identity, not the identity itself: write it to a file only you can read, and give \
                 that file (nothing was changed)"
            ));
        }
        let file = age::IdentityFile::from_file(path.to_string_lossy().into_owned()).map_err(|error| {
            bad_input(format!(
                "cannot read the age identity `{}`: {error}; give the file age-keygen wrote (nothing was changed)",
                path.display()
            ))
        })?;
        let identities = file.into_identities().map_err(|error| {
            bad_input(format!(
                "the age identity `{}` cannot be used: {error} (nothing was changed)",
                path.display()
            ))
        })?;
        if identities.is_empty() {
            bail!(bad_input(format!(
                "`{}` holds no age identity: give the file age-keygen wrote (nothing was changed)",
                path.display()
            )));
        }
        Ok(Identities(identities))
    }

    /// The plaintext of the age file `sealed`, named `name` in messages.
    pub fn open(&self, sealed: &[u8], name: &str) -> Result<Vec<u8>> {
        let mut plain = Vec::with_capacity(sealed.len());
        self.decrypt(sealed, name)?
            .read_to_end(&mut plain)
            .with_context(|| format!("cannot decrypt `{name}`"))?;
        Ok(plain)
    }

    /// Reads the plaintext of the age stream `input`.
    pub fn decrypt<R: Read>(&self, input: R, name: &str) -> Result<impl Read + use<R>> {
        let decryptor = age::Decryptor::new(input)
            .map_err(|error| anyhow!("`{name}` is not a readable age file: {error}"))?;
        decryptor
            .decrypt(self.0.iter().map(|identity| identity.as_ref() as &dyn age::Identity))
            .map_err(|error| match error {
                age::DecryptError::NoMatchingKeys => bad_input(format!(
                    "none of the keys in the identity file can decrypt `{name}`: it was encrypted to other \
                     recipients (see its manifest's fingerprints); give the matching identity (nothing was changed)"
                )),
                other => anyhow!("cannot decrypt `{name}`: {other}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_through_age() {
        let identity = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let recipients = Recipients::load(&[identity.to_public().to_string()], dir.path()).unwrap();
        let mut sealed = Vec::new();
        let mut writer = recipients.encrypt(&mut sealed).unwrap();
        writer.write_all(b"rows").unwrap();
        writer.finish().unwrap();
        let key_file = dir.path().join("key.txt");
        use age::secrecy::ExposeSecret;
        std::fs::write(&key_file, identity.to_string().expose_secret()).unwrap();
        let identities = Identities::load(&key_file).unwrap();
        let mut plain = String::new();
        identities
            .decrypt(&sealed[..], "x")
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "rows");
    }

    #[test]
    fn anything_but_a_public_key_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        std::fs::write(dir.path().join("keys.pub"), format!("# mine\n{secret}\n")).unwrap();
        let error = Recipients::load(&["keys.pub".to_string()], dir.path())
            .err()
            .unwrap();
        let text = format!("{error:#}");
        assert!(text.contains("keys.pub:2"), "{text}");
        assert!(text.contains("that is an identity"), "{text}");
        assert!(!text.contains(secret), "{text}");
        for entry in [
            secret.to_string(),
            secret.to_ascii_lowercase(),
            format!("x{secret}"),
        ] {
            let error = Recipients::load(&[entry], dir.path()).err().unwrap();
            let text = format!("{error:#}");
            assert!(text.contains("give its recipient"), "{text}");
            assert!(!text.to_ascii_lowercase().contains("qqqqqqqq"), "{text}");
        }
        assert!(Recipients::load(&["age1nope".to_string()], dir.path()).is_err());
        assert!(Recipients::load(&[], dir.path()).is_err());
    }
}
