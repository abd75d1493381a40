//! Rendering a role's rights as Redis ACL rules: the key patterns of a
//! namespace (and of one worker id), the selectors, and the arguments of
//! one user as `ACL SETUSER` takes them or as a line of an `aclfile`
//! (`users.acl`). Names are checked here because they go into key patterns
//! as they are.

use super::password::password_hash;
use super::rights::{profile, Access, Role, ROOT_COMMANDS};
use crate::names::NameKind;

/// Namespaces and worker ids are what the configuration accepts; neither
/// may hold a glob character, so they go into key patterns as they are.
/// The rule is the one of [`crate::names`]; the message names the flag.
pub(super) fn check_name(what: &str, s: &str, kind: NameKind) -> anyhow::Result<()> {
    kind.check(s)
        .map_err(|_| anyhow::anyhow!("{what}: {s:?} must be {}", kind.rule()))
}

/// The key prefix of a namespace, as `store::keys::Keys` builds it.
fn prefix(namespace: &str) -> String {
    crate::store::keys::Keys::new(namespace, 0).prefix().to_string()
}

/// The user name of a role: `<namespace>-<role>`, and
/// `<namespace>-worker-<id>` for a worker limited to one id.
pub fn user_name(namespace: &str, role: Role, worker_id: Option<&str>) -> String {
    match (role, worker_id) {
        (Role::Worker, Some(id)) => format!("{namespace}-worker-{id}"),
        _ => format!("{namespace}-{}", role.as_str()),
    }
}

/// The ACL rules of one role, one argument each (a selector is one
/// argument with spaces inside its parentheses), without the user name and
/// password. `worker_id` limits a worker to its own hash and stream; it is
/// ignored for the other roles.
pub fn rules(namespace: &str, role: Role, worker_id: Option<&str>) -> anyhow::Result<Vec<String>> {
    check_name("namespace", namespace, NameKind::Namespace)?;
    if let Some(id) = worker_id {
        check_name("worker id", id, NameKind::WorkerId)?;
    }
    let p = prefix(namespace);
    let w = match (role, worker_id) {
        (Role::Worker, Some(id)) => id,
        _ => "*",
    };
    let key = |k: &str| format!("{p}{}", k.replace("{w}", w));
    let prof = profile(role);
    let mut out: Vec<String> = ROOT_COMMANDS
        .iter()
        .chain(prof.extra_root)
        .map(|c| c.to_string())
        .collect();
    let mut root_keys: Vec<String> = Vec::new();
    for k in prof.script_keys {
        let pat = format!("~{}", key(k));
        if !root_keys.contains(&pat) {
            root_keys.push(pat);
        }
    }
    out.extend(root_keys);
    for g in prof.grants {
        let mark = match g.access {
            Access::Read => "%R~",
            Access::ReadWrite => "~",
        };
        let mut parts: Vec<String> = g.keys.iter().map(|k| format!("{mark}{}", key(k))).collect();
        parts.extend(g.commands.iter().map(|c| c.to_string()));
        out.push(format!("({})", parts.join(" ")));
    }
    Ok(out)
}

/// The arguments after `ACL SETUSER` (or after `user` in an ACL file) for
/// one user. `reset` first, so loading them again replaces the user whole
/// (rules, selectors and passwords).
pub fn setuser_args(
    namespace: &str,
    role: Role,
    worker_id: Option<&str>,
    user: &str,
    password: &str,
) -> anyhow::Result<Vec<String>> {
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("user name {user:?}: must be non-empty, without spaces");
    }
    if password.is_empty() {
        anyhow::bail!("the password of {user} is empty");
    }
    let mut args = vec![
        user.to_string(),
        "reset".to_string(),
        "on".to_string(),
        password_hash(password),
        "resetchannels".to_string(),
    ];
    args.extend(rules(namespace, role, worker_id)?);
    Ok(args)
}

/// `ACL SETUSER` lines, one per (role, user, password), for the users any
/// worker id can use. Each line can be pasted into `redis-cli` as it is.
pub fn setuser_lines(namespace: &str, users: &[(Role, &str, &str)]) -> anyhow::Result<Vec<String>> {
    users
        .iter()
        .map(|(role, user, password)| Ok(Format::Commands.line(&setuser_args(namespace, *role, None, user, password)?)))
        .collect()
}

/// How to print the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `ACL SETUSER …` lines, for `redis-cli`.
    #[default]
    Commands,
    /// `user …` lines, for a Redis `aclfile`.
    AclFile,
}

impl Format {
    /// One user's line: `args` (from [`setuser_args`]) after `ACL SETUSER`
    /// or after `user`.
    pub(super) fn line(self, args: &[String]) -> String {
        match self {
            Format::Commands => format!("ACL SETUSER {}", args.join(" ")),
            Format::AclFile => format!("user {}", args.join(" ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_in_the_namespace_and_out_of_other_roles_keys() {
        let worker = rules("drover", Role::Worker, None).unwrap().join(" ");
        for k in ["leader", "idem:", "epoch", "batches", "+info"] {
            assert!(!worker.contains(k), "{k} in {worker}");
        }
        let distributor = rules("drover", Role::Distributor, None).unwrap().join(" ");
        for k in ["leader", "scheduled", "idem:", "handlers"] {
            assert!(!distributor.contains(k), "{k} in {distributor}");
        }
        // It follows the wake stream and the events of ended attempts
        // (roles/wakes.rs), read only.
        assert!(
            distributor.contains("(%R~{drover:0}:wake %R~{drover:0}:events +xread +xrevrange)"),
            "{distributor}"
        );
        // assign.lua takes the lease, so it may begin a new epoch.
        assert!(
            distributor.contains("(~{drover:0}:epoch +hmget +hset)"),
            "{distributor}"
        );
        assert!(distributor.contains("%R~{drover:0}:workers"), "{distributor}");
        let coordinator = rules("drover", Role::Coordinator, None).unwrap().join(" ");
        assert!(!coordinator.contains("epoch"), "{coordinator}");
        for role in Role::ALL {
            for rule in rules("ns-1", role, None).unwrap() {
                for word in rule.trim_matches(|c| c == '(' || c == ')').split(' ') {
                    if let Some(i) = word.find('~') {
                        assert!(word[i + 1..].starts_with("{ns-1:0}:"), "{word}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_worker_id_limits_the_worker_to_its_own_keys() {
        let r = rules("drover", Role::Worker, Some("w-1")).unwrap().join(" ");
        assert!(
            r.contains("~{drover:0}:w:w-1 ") && r.contains("~{drover:0}:w:w-1:in"),
            "{r}"
        );
        assert!(!r.contains("w:*"), "{r}");
        assert!(rules("drover", Role::Worker, Some("w*")).is_err());
        assert!(rules("dro ver", Role::Worker, None).is_err());
        assert_eq!(user_name("drover", Role::Worker, Some("w-1")), "drover-worker-w-1");
        assert_eq!(user_name("x", Role::Distributor, Some("w-1")), "x-distributor");
    }

    #[test]
    fn lines_hold_the_hash_not_the_password() {
        let lines = setuser_lines("drover", &[(Role::Worker, "drover-worker", "s3cret")]).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("ACL SETUSER drover-worker reset on #"),
            "{}",
            lines[0]
        );
        assert!(!lines[0].contains("s3cret"));
        assert!(lines[0].contains(&password_hash("s3cret")));
        assert_eq!(password_hash("pw").len(), 65);
    }
}
