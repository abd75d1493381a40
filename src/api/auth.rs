//! API tokens and scopes. Tokens come from `DROVER_API_TOKENS` (or its
//! `_FILE`) as `TOKEN:SCOPE[,SCOPE]` entries separated by `;`, whitespace or
//! newlines. Only SHA-256 digests are kept, so a token never sits in memory
//! as comparable text and lookups do not leak it through timing; nothing
//! here ever prints a token.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Submit,
    Read,
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "submit" => Some(Scope::Submit),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// Scopes one token grants; `admin` implies the others.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    scopes: Vec<Scope>,
}

impl Grants {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

#[derive(Clone, Default)]
pub struct ApiTokens {
    by_digest: HashMap<[u8; 32], Grants>,
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiTokens({} tokens)", self.by_digest.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ApiTokens {
    /// Parses the token list; errors name the entry by position, never by
    /// its text.
    pub fn parse(spec: &str) -> Result<ApiTokens, String> {
        let mut tokens = ApiTokens::default();
        let entries = spec
            .split([';', '\n', ' ', '\t', '\r'])
            .filter(|e| !e.trim().is_empty());
        for (n, entry) in entries.enumerate() {
            let n = n + 1;
            let (token, scopes) = entry
                .trim()
                .rsplit_once(':')
                .ok_or_else(|| format!("token entry #{n} is not TOKEN:SCOPE[,SCOPE]"))?;
            if token.len() < 16 {
                return Err(format!("token entry #{n}: tokens must be at least 16 characters"));
            }
            let mut grants = Grants::default();
            for s in scopes.split(',') {
                let scope = Scope::parse(s.trim()).ok_or_else(|| {
                    format!(
                        "token entry #{n}: unknown scope {:?} (expected submit, read or admin)",
                        s.trim()
                    )
                })?;
                grants.scopes.push(scope);
            }
            if tokens.by_digest.insert(digest(token), grants).is_some() {
                return Err(format!("token entry #{n} repeats an earlier token"));
            }
        }
        if tokens.by_digest.is_empty() {
            return Err("no API tokens given".into());
        }
        Ok(tokens)
    }

    /// One token with every scope (what `drover dev` hands out).
    pub fn single_admin(token: &str) -> ApiTokens {
        let mut tokens = ApiTokens::default();
        tokens.by_digest.insert(
            digest(token),
            Grants {
                scopes: vec![Scope::Admin],
            },
        );
        tokens
    }

    pub fn grants(&self, token: &str) -> Option<&Grants> {
        self.by_digest.get(&digest(token))
    }
}

/// A fresh random token, for `drover dev` and `drover keygen`.
pub fn generate_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    format!("drv_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes_and_admin_implies_all() {
        let t = ApiTokens::parse("aaaaaaaaaaaaaaaa:read;bbbbbbbbbbbbbbbb:submit,read\ncccccccccccccccc:admin").unwrap();
        let r = t.grants("aaaaaaaaaaaaaaaa").unwrap();
        assert!(r.allows(Scope::Read) && !r.allows(Scope::Submit));
        assert!(t.grants("cccccccccccccccc").unwrap().allows(Scope::Submit));
        assert!(t.grants("dddddddddddddddd").is_none());
    }

    #[test]
    fn errors_never_echo_the_token() {
        for bad in ["supersecretvalue123", "short:read", "supersecretvalue123:write"] {
            let e = ApiTokens::parse(bad).unwrap_err();
            assert!(!e.contains("supersecret") && !e.contains("short"), "{e}");
        }
        assert!(format!("{:?}", ApiTokens::single_admin("supersecretvalue123")).contains("1 tokens"));
    }
}
