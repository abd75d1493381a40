//! The names drover checks once and then trusts: key namespaces, worker ids,
//! handler names and tags. Each has one `parse` that encodes its rule, so the
//! rule lives here and nowhere else. The rules are narrow on purpose: names
//! go into Redis keys and ACL key patterns (no glob characters), metric
//! labels and log lines, and tags are matched as they are written. Queue
//! names are narrower still (lower case, no dot), as they name a queue's
//! keys, URL path segments and metric label values.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The kinds of name, each with its rule: ASCII letters and digits plus a
/// few punctuation characters, and a length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Namespace,
    WorkerId,
    HandlerName,
    Tag,
    /// A signing key's id (`DROVER_SIGNING_KEYS`): it travels in every
    /// envelope as a label of at most 32 bytes (`envelope::wire`).
    KeyId,
    /// A queue's name (`default` unless a task names one).
    Queue,
}

impl NameKind {
    /// The kind in words, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Namespace => "namespace",
            NameKind::WorkerId => "worker id",
            NameKind::HandlerName => "handler name",
            NameKind::Tag => "tag",
            NameKind::KeyId => "key id",
            NameKind::Queue => "queue name",
        }
    }

    /// The longest name of this kind, in characters (all of them ASCII).
    pub fn max_len(self) -> usize {
        match self {
            // Worker ids default to hostname-pid, and hostnames reach 64.
            NameKind::WorkerId => 128,
            NameKind::Namespace | NameKind::HandlerName | NameKind::Tag | NameKind::Queue => 64,
            NameKind::KeyId => 32,
        }
    }

    /// The characters allowed besides the letters and digits. Tags also
    /// take `:` and `/`, for values like `zone:eu-1` or `team/ml`; they
    /// never become keys.
    fn punctuation(self) -> &'static str {
        match self {
            NameKind::Tag => "-_.:/",
            NameKind::Queue => "-_",
            NameKind::Namespace | NameKind::WorkerId | NameKind::HandlerName | NameKind::KeyId => "-_.",
        }
    }

    /// Queue names take lower-case letters only, so two spellings never
    /// name one queue's metrics and URLs differently.
    fn upper_case_allowed(self) -> bool {
        self != NameKind::Queue
    }

    /// Whether `c` may appear in a name of this kind.
    pub fn allows(self, c: char) -> bool {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || (c.is_ascii_uppercase() && self.upper_case_allowed())
            || self.punctuation().contains(c)
    }

    /// The allowed characters as messages list them: `A-Z a-z 0-9 - _ .`.
    pub fn charset(self) -> String {
        let mut out = String::from(if self.upper_case_allowed() {
            "A-Z a-z 0-9"
        } else {
            "a-z 0-9"
        });
        for c in self.punctuation().chars() {
            out.push(' ');
            out.push(c);
        }
        out
    }

    /// The whole rule in words, as drover's messages have always said it:
    /// `1-64 characters of A-Z a-z 0-9 - _ .`.
    pub fn rule(self) -> String {
        format!("1-{} characters of {}", self.max_len(), self.charset())
    }

    /// Checks `s` against this kind's rule, saying which part it breaks.
    pub fn check(self, s: &str) -> Result<(), NameError> {
        if s.is_empty() {
            return Err(NameError::Empty { kind: self });
        }
        if let Some(found) = s.chars().find(|c| !self.allows(*c)) {
            return Err(NameError::Character { kind: self, found });
        }
        // Every character is ASCII by now, so bytes count characters.
        if s.len() > self.max_len() {
            return Err(NameError::TooLong {
                kind: self,
                len: s.len(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name refused by its rule, and which part of the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} is empty: it must be {}", .kind.rule())]
    Empty { kind: NameKind },
    #[error("{kind} holds {found:?}: only {} are allowed", .kind.charset())]
    Character { kind: NameKind, found: char },
    #[error("{kind} is {len} characters long: at most {} are allowed", .kind.max_len())]
    TooLong { kind: NameKind, len: usize },
}

impl NameError {
    /// The kind of name that was refused.
    pub fn kind(&self) -> NameKind {
        match self {
            NameError::Empty { kind } | NameError::Character { kind, .. } | NameError::TooLong { kind, .. } => *kind,
        }
    }
}

/// Defines a name type: a `String` that passed its kind's rule.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The kind of name this type holds, with its rule.
            pub const KIND: NameKind = $kind;

            /// The name, if `s` follows the rule exactly (nothing is trimmed).
            pub fn parse(s: &str) -> Result<Self, NameError> {
                Self::KIND.check(s)?;
                Ok($name(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        /// Deserializing checks the rule, so a decoded name is as trusted as a parsed one.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Self::KIND.check(&s).map_err(serde::de::Error::custom)?;
                Ok($name(s))
            }
        }
    };
}

name_type!(
    /// A key namespace: clusters sharing one Redis use different ones.
    Namespace,
    NameKind::Namespace
);

name_type!(
    /// A worker's id: its hash and stream in Redis, and its ACL user.
    WorkerId,
    NameKind::WorkerId
);

name_type!(
    /// A handler's name, as a worker profile offers it and a task asks for it.
    HandlerName,
    NameKind::HandlerName
);

name_type!(
    /// A worker tag, which a task may require.
    Tag,
    NameKind::Tag
);

name_type!(
    /// A queue's name: `default`, or one a task or the configuration names.
    QueueName,
    NameKind::Queue
);

impl QueueName {
    /// The queue of a task that names none.
    pub const DEFAULT: &'static str = "default";

    pub fn default_queue() -> Self {
        QueueName(Self::DEFAULT.to_string())
    }
}

/// A queue a worker takes tasks from, and its weight: among queues with
/// ready tasks of equal priority, a queue of weight 3 is offered first
/// three times as often as one of weight 1. Written `media` (weight 1) or
/// `media:3`, in a profile's `worker.queues` and in heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueWeight {
    pub queue: QueueName,
    pub weight: u32,
}

impl QueueWeight {
    /// The largest weight: enough for any share, small enough that the
    /// distributor's rotation over weights stays short.
    pub const MAX: u32 = 100;

    /// Parses `<queue>` or `<queue>:<weight>` (weight 1..=100).
    pub fn parse(s: &str) -> Result<QueueWeight, String> {
        let (name, weight) = match s.trim().split_once(':') {
            Some((name, w)) => {
                let w: u32 = w
                    .trim()
                    .parse()
                    .ok()
                    .filter(|w| (1..=Self::MAX).contains(w))
                    .ok_or_else(|| format!("{s:?}: a weight is a whole number from 1 to {}", Self::MAX))?;
                (name.trim(), w)
            }
            None => (s.trim(), 1),
        };
        let queue = QueueName::parse(name).map_err(|_| format!("{s:?}: queue names are {}", QueueName::KIND.rule()))?;
        Ok(QueueWeight { queue, weight })
    }
}

impl fmt::Display for QueueWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.queue.as_str(), self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_weights_parse_with_or_without_a_weight() {
        let w = QueueWeight::parse("media:3").unwrap();
        assert_eq!((w.queue.as_str(), w.weight), ("media", 3));
        assert_eq!(QueueWeight::parse(" default ").unwrap().weight, 1);
        assert_eq!(QueueWeight::parse("media:3").unwrap().to_string(), "media:3");
        for bad in ["", "media:0", "media:101", "media:x", "Media", "a b:2", ":3"] {
            assert!(QueueWeight::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Runs `parse` over a table and checks each verdict, and that accepted
    /// names come back unchanged.
    fn check_table<T: fmt::Display>(
        parse: fn(&str) -> Result<T, NameError>,
        accepted: &[&str],
        refused: &[(&str, NameError)],
    ) {
        for s in accepted {
            match parse(s) {
                Ok(name) => assert_eq!(name.to_string(), *s),
                Err(e) => panic!("{s:?} refused: {e}"),
            }
        }
        for (s, want) in refused {
            match parse(s) {
                Ok(_) => panic!("{s:?} accepted"),
                Err(e) => assert_eq!(&e, want, "{s:?}"),
            }
        }
    }

    fn char_err(kind: NameKind, found: char) -> NameError {
        NameError::Character { kind, found }
    }

    /// The table shared by the kinds with the name charset: namespaces,
    /// worker ids and handler names.
    fn name_rule_refusals(kind: NameKind) -> Vec<(String, NameError)> {
        let too_long = "a".repeat(kind.max_len() + 1);
        vec![
            (String::new(), NameError::Empty { kind }),
            (
                too_long.clone(),
                NameError::TooLong {
                    kind,
                    len: too_long.len(),
                },
            ),
            ("a b".into(), char_err(kind, ' ')),
            ("a*".into(), char_err(kind, '*')),
            ("a:b".into(), char_err(kind, ':')),
            ("a/b".into(), char_err(kind, '/')),
            ("a,b".into(), char_err(kind, ',')),
            ("{ns}".into(), char_err(kind, '{')),
            ("é".into(), char_err(kind, 'é')),
            (" a".into(), char_err(kind, ' ')),
        ]
    }

    fn run_name_rule<T: fmt::Display>(parse: fn(&str) -> Result<T, NameError>, kind: NameKind) {
        let longest = "a".repeat(kind.max_len());
        let accepted = ["drover", "a", "Z", "0", "A-z_0.9", "host-1234", "..", longest.as_str()];
        let refused = name_rule_refusals(kind);
        let refused: Vec<(&str, NameError)> = refused.iter().map(|(s, e)| (s.as_str(), e.clone())).collect();
        check_table(parse, &accepted, &refused);
    }

    #[test]
    fn namespaces_are_1_to_64_of_the_name_charset() {
        run_name_rule(Namespace::parse, NameKind::Namespace);
        assert!(Namespace::parse(&"n".repeat(64)).is_ok());
        assert!(Namespace::parse(&"n".repeat(65)).is_err());
    }

    #[test]
    fn worker_ids_are_1_to_128_of_the_name_charset() {
        run_name_rule(WorkerId::parse, NameKind::WorkerId);
        assert!(WorkerId::parse(&"w".repeat(128)).is_ok());
        assert!(WorkerId::parse(&"w".repeat(129)).is_err());
    }

    #[test]
    fn handler_names_are_1_to_64_of_the_name_charset() {
        run_name_rule(HandlerName::parse, NameKind::HandlerName);
        assert!(HandlerName::parse(&"h".repeat(65)).is_err());
    }

    #[test]
    fn tags_also_take_colons_and_slashes() {
        let kind = NameKind::Tag;
        let longest = "t".repeat(64);
        let too_long = "t".repeat(65);
        check_table(
            Tag::parse,
            &["gpu", "zone:eu-1", "team/ml", "a.b_c-d", ":", "/", longest.as_str()],
            &[
                ("", NameError::Empty { kind }),
                (too_long.as_str(), NameError::TooLong { kind, len: 65 }),
                ("a b", char_err(kind, ' ')),
                ("a,b", char_err(kind, ',')),
                ("a*", char_err(kind, '*')),
                ("gpu\n", char_err(kind, '\n')),
                ("ü", char_err(kind, 'ü')),
            ],
        );
    }

    #[test]
    fn queue_names_are_lower_case_letters_digits_dash_and_underscore() {
        let kind = NameKind::Queue;
        let longest = "q".repeat(64);
        let too_long = "q".repeat(65);
        check_table(
            QueueName::parse,
            &["default", "media", "q-1", "a_b", "0", longest.as_str()],
            &[
                ("", NameError::Empty { kind }),
                ("Media", char_err(kind, 'M')),
                ("a.b", char_err(kind, '.')),
                ("a:b", char_err(kind, ':')),
                ("a b", char_err(kind, ' ')),
                ("{q}", char_err(kind, '{')),
                (too_long.as_str(), NameError::TooLong { kind, len: 65 }),
            ],
        );
        assert_eq!(kind.rule(), "1-64 characters of a-z 0-9 - _");
        assert_eq!(QueueName::default_queue().as_str(), "default");
    }

    #[test]
    fn rules_read_as_the_messages_always_said() {
        assert_eq!(NameKind::Namespace.rule(), "1-64 characters of A-Z a-z 0-9 - _ .");
        assert_eq!(NameKind::WorkerId.rule(), "1-128 characters of A-Z a-z 0-9 - _ .");
        assert_eq!(NameKind::HandlerName.rule(), "1-64 characters of A-Z a-z 0-9 - _ .");
        assert_eq!(NameKind::Tag.rule(), "1-64 characters of A-Z a-z 0-9 - _ . : /");
    }

    #[test]
    fn errors_say_which_rule_failed() {
        let e = Namespace::parse("").unwrap_err();
        assert_eq!(
            e.to_string(),
            "namespace is empty: it must be 1-64 characters of A-Z a-z 0-9 - _ ."
        );
        let e = Tag::parse("a b").unwrap_err();
        assert_eq!(e.to_string(), "tag holds ' ': only A-Z a-z 0-9 - _ . : / are allowed");
        let e = WorkerId::parse(&"w".repeat(130)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "worker id is 130 characters long: at most 128 are allowed"
        );
        assert_eq!(e.kind(), NameKind::WorkerId);
    }

    #[test]
    fn serde_round_trips_and_checks_on_the_way_in() {
        let tag = Tag::parse("zone:eu").unwrap();
        let json = serde_json::to_string(&tag).unwrap();
        assert_eq!(json, "\"zone:eu\"");
        assert_eq!(serde_json::from_str::<Tag>(&json).unwrap(), tag);
        let err = serde_json::from_str::<HandlerName>("\"a b\"").unwrap_err();
        assert!(err.to_string().contains("handler name holds ' '"), "{err}");
        assert!(serde_json::from_str::<Namespace>("\"\"").is_err());
    }

    #[test]
    fn names_read_back_as_given() {
        let id: WorkerId = "w-1".parse().unwrap();
        assert_eq!(id.as_str(), "w-1");
        assert_eq!(id.as_ref(), "w-1");
        assert_eq!(String::from(id.clone()), "w-1");
        assert_eq!(id.into_string(), "w-1");
    }
}
