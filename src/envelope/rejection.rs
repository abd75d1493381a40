//! Why a stream message was refused. Every check of [`Keyring::verify`](super::Keyring::verify)
//! and of [`Verified::parse`](super::Verified::parse) ends in one of these few kinds, so receivers
//! count and log refusals by a stable label instead of by error text.

/// Why a message was refused; `reason()` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("envelope is larger than the size limit")]
    Oversize,
    #[error("envelope is malformed")]
    Malformed,
    #[error("envelope signature is invalid or signed with an unknown key")]
    Signature,
    #[error("envelope has expired")]
    Expired,
}

impl Rejection {
    /// Short, stable label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Oversize => "oversize",
            Rejection::Malformed => "malformed",
            Rejection::Signature => "signature",
            Rejection::Expired => "expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_metric_labels() {
        let all = [
            Rejection::Oversize,
            Rejection::Malformed,
            Rejection::Signature,
            Rejection::Expired,
        ];
        let labels: Vec<_> = all.iter().map(|r| r.reason()).collect();
        assert_eq!(labels, ["oversize", "malformed", "signature", "expired"]);
    }
}
