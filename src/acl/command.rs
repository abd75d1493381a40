//! `drover redis-acl` itself: which users to make (the coordinator, the
//! distributor, the shared worker and one per `--worker-id`), their
//! passwords, the rules for Redis (stdout) and the notes for the operator
//! (stderr) that say how each role connects.

use crate::names::NameKind;
use std::path::{Path, PathBuf};

use super::password::{kept_password, new_password};
use super::rights::Role;
use super::rules::{check_name, setuser_args, user_name, Format};

/// What `drover redis-acl` generates.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    /// Also one user per id here, limited to that worker's own hash and
    /// stream (`<namespace>-worker-<id>`).
    pub worker_ids: Vec<String>,
    /// The worker user any worker id can use (`<namespace>-worker`).
    pub shared_worker: bool,
    /// Keep each user's password in `DIR/<user>`: read when the file
    /// exists, else a new random one is written there (mode 0600). Without
    /// it, new random passwords are printed in the notes.
    pub password_dir: Option<PathBuf>,
    pub format: Format,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: "drover".into(),
            worker_ids: Vec::new(),
            shared_worker: true,
            password_dir: None,
            format: Format::Commands,
        }
    }
}

/// One generated user.
#[derive(Debug, Clone)]
pub struct GeneratedUser {
    pub role: Role,
    pub worker_id: Option<String>,
    pub name: String,
    pub password: String,
    /// Where the password is kept, with `password_dir`.
    pub password_file: Option<PathBuf>,
}

/// The output of `drover redis-acl`: `rules` for Redis (stdout, so it can
/// be piped to `redis-cli` or saved as an ACL file) and `notes` for the
/// operator (stderr: how each role connects).
#[derive(Debug, Clone)]
pub struct Generated {
    pub users: Vec<GeneratedUser>,
    pub rules: String,
    pub notes: String,
}

/// Generates the users of `drover redis-acl`.
pub fn run(opts: &Options) -> anyhow::Result<Generated> {
    let ns = opts.namespace.as_str();
    check_name("--namespace", ns, NameKind::Namespace)?;
    let mut users = Vec::new();
    let mut lines = Vec::new();
    for (role, worker_id) in wanted_users(opts)? {
        let (user, args) = generate_user(ns, role, worker_id, opts.password_dir.as_deref())?;
        lines.push(opts.format.line(&args));
        users.push(user);
    }
    let mut rules = lines.join("\n");
    rules.push('\n');
    let notes = notes(ns, opts.format, &users);
    Ok(Generated { users, rules, notes })
}

/// The users to make, in the order they are printed: coordinator,
/// distributor, the shared worker, then one per worker id (each once).
fn wanted_users(opts: &Options) -> anyhow::Result<Vec<(Role, Option<String>)>> {
    let mut wanted: Vec<(Role, Option<String>)> = vec![(Role::Coordinator, None), (Role::Distributor, None)];
    if opts.shared_worker {
        wanted.push((Role::Worker, None));
    }
    for id in &opts.worker_ids {
        check_name("--worker-id", id, NameKind::WorkerId)?;
        if !wanted.iter().any(|(_, w)| w.as_deref() == Some(id.as_str())) {
            wanted.push((Role::Worker, Some(id.clone())));
        }
    }
    if !wanted.iter().any(|(r, _)| *r == Role::Worker) {
        anyhow::bail!("no worker user: give --worker-id or keep the shared worker user");
    }
    Ok(wanted)
}

/// One user with its password (kept in `password_dir`, or new), and its
/// arguments for `ACL SETUSER` or an ACL file.
fn generate_user(
    ns: &str,
    role: Role,
    worker_id: Option<String>,
    password_dir: Option<&Path>,
) -> anyhow::Result<(GeneratedUser, Vec<String>)> {
    let name = user_name(ns, role, worker_id.as_deref());
    let (password, password_file) = match password_dir {
        Some(dir) => {
            let (pw, path) = kept_password(dir, &name)?;
            (pw, Some(path))
        }
        None => (new_password(), None),
    };
    let args = setuser_args(ns, role, worker_id.as_deref(), &name, &password)?;
    let user = GeneratedUser {
        role,
        worker_id,
        name,
        password,
        password_file,
    };
    Ok((user, args))
}

/// What the operator reads: how to load the rules, and how each role
/// connects (the password itself only when it is kept in no file).
fn notes(ns: &str, format: Format, users: &[GeneratedUser]) -> String {
    let mut notes = vec![
        format!("# drover Redis ACL users for namespace {ns:?} (Redis 7.0 or later: the rules use selectors)."),
        match format {
            Format::Commands => {
                "# Load them as an admin user, e.g. drover redis-acl ... | REDISCLI_AUTH=ADMIN_PASSWORD redis-cli --user ADMIN; then ACL SAVE (with an aclfile) or CONFIG REWRITE to keep them.".to_string()
            }
            Format::AclFile => {
                "# Save the lines in the file named by `aclfile` in redis.conf (keep the admin and default user lines there too), then ACL LOAD or restart Redis.".to_string()
            }
        },
        "# Each role connects as its own user (the password may also go in the URL: redis://USER:PASSWORD@HOST:6379):"
            .to_string(),
    ];
    for u in users {
        let who = match (&u.role, &u.worker_id) {
            (Role::Worker, Some(id)) => format!("worker {id} only (--id {id})"),
            (Role::Worker, None) => "worker (any --id)".to_string(),
            (r, _) => r.as_str().to_string(),
        };
        let secret = match &u.password_file {
            Some(p) => format!("DROVER_REDIS_PASSWORD_FILE={}", p.display()),
            None => format!("DROVER_REDIS_PASSWORD={}", u.password),
        };
        notes.push(format!(
            "#   {who}: DROVER_REDIS_URL=redis://{}@HOST:6379 {secret}",
            u.name
        ));
    }
    notes.push(format!(
        "# `drover snapshot export|import` work with the {} user. Redis' default user keeps its own rules: turn it off, or give it a password, once an admin user exists.",
        user_name(ns, Role::Coordinator, None)
    ));
    let mut notes = notes.join("\n");
    notes.push('\n');
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_dir_keeps_passwords_between_runs() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            password_dir: Some(dir.path().join("pw")),
            worker_ids: vec!["w1".into()],
            ..Options::default()
        };
        let first = run(&opts).unwrap();
        assert_eq!(first.users.len(), 4);
        let second = run(&opts).unwrap();
        assert_eq!(first.rules, second.rules, "same passwords, same lines");
        for u in &first.users {
            let f = u.password_file.as_ref().unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600);
            assert!(first.notes.contains(&f.display().to_string()));
            assert!(
                !first.notes.contains(&u.password),
                "the notes name the file, not the password"
            );
        }
        let fresh = run(&Options::default()).unwrap();
        assert_eq!(fresh.users.len(), 3);
        assert!(fresh.notes.contains(&fresh.users[0].password));
        assert!(!fresh.rules.contains(&fresh.users[0].password));
        let aclfile = run(&Options {
            format: Format::AclFile,
            ..opts
        })
        .unwrap();
        assert!(aclfile.rules.lines().all(|l| l.starts_with("user ")));
    }
}
