//! `drover redis-acl`: one Redis ACL user per role, each allowed only the
//! commands that role sends and only on the keys it touches.
//!
//! Redis checks every command a Lua script runs against the ACL of the
//! client that called the script, keys included. So a role's user must allow
//! the commands of every script it runs, on the keys those scripts touch,
//! and `EVALSHA` itself needs read and write access to every key a script is
//! given in `KEYS`. The rules here come from `lua/README.md` (which script
//! touches which keys, and who calls it) and `src/store/mod.rs` (every
//! command each store method sends).
//!
//! Each user is built from Redis 7 selectors: the root rules allow only
//! commands without keys (connection commands, `TIME`, `SCRIPT LOAD`,
//! `EVALSHA`) plus, for `EVALSHA`, the keys the role's scripts declare; each
//! selector `(~keys +commands)` allows a few commands on a few keys. A
//! command passes if one selector allows both it and all of its keys, so a
//! command granted on one key is not granted on the others: the distributor
//! may `LPOP` a ready list but not `DEL` it, a worker may `XTRIM` its own
//! stream but not the events stream, and no role may `DEL` what it does not
//! delete itself.
//!
//! Passwords are given as SHA-256 hashes (`#<hex>`), so neither the printed
//! commands nor an ACL file hold them in clear.
//!
//! Files:
//! - `rights`: [`Role`] and what each role may do, as data.
//! - `rules`: those rights rendered as ACL rules and `ACL SETUSER` / `aclfile`
//!   lines; the name checks.
//! - `password`: new, kept and hashed passwords.
//! - `command`: [`run`], the users `drover redis-acl` prints and its notes.

mod command;
mod password;
mod rights;
mod rules;

pub use command::{run, Generated, GeneratedUser, Options};
pub use password::password_hash;
pub use rights::Role;
pub use rules::{rules, setuser_args, setuser_lines, user_name, Format};
