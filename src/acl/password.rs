//! Users' passwords: new random ones, ones kept in a directory between
//! runs (one file per user, mode 0600), and the SHA-256 form (`#<hex>`)
//! that goes into the rules, so neither the printed commands nor an ACL
//! file hold a password in clear.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The password as Redis stores it: `#` and its SHA-256 in hex.
pub fn password_hash(password: &str) -> String {
    format!("#{}", hex::encode(Sha256::digest(password.as_bytes())))
}

pub(super) fn new_password() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Reads the password kept in `dir/user`, or writes a new one there.
pub(super) fn kept_password(dir: &Path, user: &str) -> anyhow::Result<(String, PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let path = dir.join(user);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let pw = s.trim().to_string();
            if pw.is_empty() {
                anyhow::bail!("{} is empty: remove it to get a new password", path.display());
            }
            Ok((pw, path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pw = new_password();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
            writeln!(f, "{pw}")?;
            Ok((pw, path))
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}
