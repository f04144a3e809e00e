//! Users and their access rules, kept in `config/users.json` under the data directory.
//!
//! A user is an access key with its secret key, a super-user flag and a list of rules. A rule
//! allows or denies one action (`Pub` or `Sub`) on topics or groups whose name matches a
//! pattern: an exact name, a prefix ending in `*` (`orders-*`), or `*` for every name. A
//! request is allowed when some rule allows every resource it touches and no rule denies one
//! of them; deny wins. A super user may do everything, the admin API included.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

/// Largest length of an access key or a secret key.
pub const MAX_KEY_LEN: usize = 256;
/// Most rules one user may have.
pub const MAX_RULES: usize = 1024;

const FILE_NAME: &str = "users.json";
const FORMAT_VERSION: u32 = 1;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

/// What a request does with a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Send to a topic (and end a transaction on it).
    Pub,
    /// Consume from a topic, as a consumer group.
    Sub,
}

/// Kind of resource a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    Topic,
    Group,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Pub => "Pub",
            Action::Sub => "Sub",
        })
    }
}

/// One access rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    pub decision: Decision,
    pub action: Action,
    pub kind: ResourceKind,
    /// An exact name, a prefix ending in `*`, or `*`.
    pub pattern: String,
}

impl Rule {
    /// Checks the pattern: a valid resource name, optionally ending in `*`, or `*` alone.
    pub fn validate(&self) -> Result<(), UserError> {
        let name = self.pattern.strip_suffix('*').unwrap_or(&self.pattern);
        let bad = |reason: &str| UserError::InvalidRule(format!("{:?}: {reason}", self.pattern));
        if name.contains('*') {
            return Err(bad("`*` may only end a pattern"));
        }
        if name.is_empty() {
            return if self.pattern == "*" {
                Ok(())
            } else {
                Err(bad("empty pattern"))
            };
        }
        if name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(bad(
                "a name is at most 255 printable ASCII characters, no comma",
            ));
        }
        Ok(())
    }

    fn matches(&self, action: Action, kind: ResourceKind, name: &str) -> bool {
        self.action == action
            && self.kind == kind
            && match self.pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => self.pattern == name,
            }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decision = match self.decision {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        };
        write!(
            f,
            "{decision} {} {} {}",
            self.action, self.kind, self.pattern
        )
    }
}

/// One resource a request touches, with what it does to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub action: Action,
    pub kind: ResourceKind,
    pub name: String,
}

impl Need {
    pub fn topic(action: Action, name: impl Into<String>) -> Need {
        Need {
            action,
            kind: ResourceKind::Topic,
            name: name.into(),
        }
    }

    /// Consuming as `name`.
    pub fn group(name: impl Into<String>) -> Need {
        Need {
            action: Action::Sub,
            kind: ResourceKind::Group,
            name: name.into(),
        }
    }
}

/// A user: an access key, its secret, and what it may do.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub access_key: String,
    pub secret_key: String,
    #[serde(default)]
    pub super_user: bool,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("User")
            .field("access_key", &self.access_key)
            .field("super_user", &self.super_user)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl User {
    /// `Ok` when the user may do every one of `needs`; otherwise the first one refused and
    /// why (denied by a rule, or allowed by none).
    pub fn check(&self, needs: &[Need]) -> Result<(), Refusal> {
        if self.super_user {
            return Ok(());
        }
        for need in needs {
            let matching = |d: Decision| {
                self.rules
                    .iter()
                    .find(|r| r.decision == d && r.matches(need.action, need.kind, &need.name))
            };
            if let Some(rule) = matching(Decision::Deny) {
                return Err(Refusal {
                    need: need.clone(),
                    denied_by: Some(rule.clone()),
                });
            }
            if matching(Decision::Allow).is_none() {
                return Err(Refusal {
                    need: need.clone(),
                    denied_by: None,
                });
            }
        }
        Ok(())
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub need: Need,
    /// The deny rule that matched; `None`: no rule allows it.
    pub denied_by: Option<Rule>,
}

/// Failures of user management.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid access key: {0}")]
    InvalidAccessKey(String),
    #[error("invalid secret key: {0}")]
    InvalidSecretKey(String),
    #[error("invalid rule {0}")]
    InvalidRule(String),
    #[error("no user with access key {0:?}")]
    NotFound(String),
    #[error("user {access_key:?} already has {MAX_RULES} rules")]
    TooManyRules { access_key: String },
    #[error("user file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

#[derive(Serialize, Deserialize)]
struct UserFile {
    version: u32,
    users: Vec<User>,
}

/// Checks an access key: 1..=256 characters of `A-Z a-z 0-9 - _ .`.
pub fn validate_access_key(key: &str) -> Result<(), UserError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(UserError::InvalidAccessKey(format!(
            "{} characters, want 1..={MAX_KEY_LEN}",
            key.len()
        )));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(UserError::InvalidAccessKey(format!(
            "{key:?} may only hold letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

fn validate_secret_key(key: &str) -> Result<(), UserError> {
    if key.len() < 8 || key.len() > MAX_KEY_LEN {
        return Err(UserError::InvalidSecretKey(format!(
            "{} characters, want 8..={MAX_KEY_LEN}",
            key.len()
        )));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(UserError::InvalidSecretKey(
            "only printable ASCII without spaces".into(),
        ));
    }
    Ok(())
}

/// The users of one broker, read from and written through to its user file.
#[derive(Debug)]
pub struct UserStore {
    path: PathBuf,
    users: RwLock<Arc<BTreeMap<String, Arc<User>>>>,
    /// Serializes changes, so each one reads the state the previous one wrote.
    writing: Mutex<()>,
    /// Bumped by every change (a master ships the users to its slaves when it moved).
    version: std::sync::atomic::AtomicU64,
}

impl UserStore {
    /// Opens the user file in `config_dir` (none yet: no users).
    pub fn open(config_dir: &Path) -> Result<UserStore, UserError> {
        let path = config_dir.join(FILE_NAME);
        let file_err = |reason: String| UserError::File {
            path: path.clone(),
            reason,
        };
        let users = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: UserFile =
                    serde_json::from_slice(&bytes).map_err(|e| file_err(e.to_string()))?;
                if file.version != FORMAT_VERSION {
                    return Err(file_err(format!(
                        "format version {} is not {FORMAT_VERSION}",
                        file.version
                    )));
                }
                file.users
                    .into_iter()
                    .map(|u| (u.access_key.clone(), Arc::new(u)))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(file_err(e.to_string())),
        };
        Ok(UserStore {
            path,
            users: RwLock::new(Arc::new(users)),
            writing: Mutex::new(()),
            version: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Counts changes since the store opened.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every user with its secret and rules, encoded for a slave's [`UserStore::install`].
    pub fn export(&self) -> Vec<u8> {
        let file = UserFile {
            version: FORMAT_VERSION,
            users: self.users.read().values().map(|u| (**u).clone()).collect(),
        };
        serde_json::to_vec(&file).unwrap_or_default()
    }

    /// Replaces every user with the master's `exported` ones (durable when it returns; a
    /// no-op when nothing differs).
    pub fn install(&self, exported: &[u8]) -> Result<(), UserError> {
        let file: UserFile = serde_json::from_slice(exported).map_err(|e| UserError::File {
            path: self.path.clone(),
            reason: format!("the master's users do not decode: {e}"),
        })?;
        if file.version != FORMAT_VERSION {
            return Err(UserError::File {
                path: self.path.clone(),
                reason: format!(
                    "the master's users are in format version {}, not {FORMAT_VERSION}",
                    file.version
                ),
            });
        }
        let next: BTreeMap<String, Arc<User>> = file
            .users
            .into_iter()
            .map(|u| (u.access_key.clone(), Arc::new(u)))
            .collect();
        if *self.users.read().as_ref() == next {
            return Ok(());
        }
        self.change(|users| {
            *users = next;
            Ok(())
        })
    }

    /// The user with `access_key`.
    pub fn get(&self, access_key: &str) -> Option<Arc<User>> {
        self.users.read().get(access_key).cloned()
    }

    /// Every user, by access key.
    pub fn list(&self) -> Vec<Arc<User>> {
        self.users.read().values().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.users.read().is_empty()
    }

    /// Creates the user, or replaces its secret and super-user flag (its rules stay).
    pub fn put(
        &self,
        access_key: &str,
        secret_key: &str,
        super_user: bool,
    ) -> Result<(), UserError> {
        validate_access_key(access_key)?;
        validate_secret_key(secret_key)?;
        self.change(|users| {
            let rules = users
                .get(access_key)
                .map(|u| u.rules.clone())
                .unwrap_or_default();
            users.insert(
                access_key.to_owned(),
                Arc::new(User {
                    access_key: access_key.to_owned(),
                    secret_key: secret_key.to_owned(),
                    super_user,
                    rules,
                }),
            );
            Ok(())
        })
    }

    pub fn delete(&self, access_key: &str) -> Result<(), UserError> {
        self.change(|users| {
            users
                .remove(access_key)
                .map(drop)
                .ok_or_else(|| UserError::NotFound(access_key.to_owned()))
        })
    }

    /// Adds `rule` to the user's rules (no-op when it has it).
    pub fn grant(&self, access_key: &str, rule: Rule) -> Result<(), UserError> {
        rule.validate()?;
        self.change_user(access_key, |user| {
            if !user.rules.contains(&rule) {
                if user.rules.len() >= MAX_RULES {
                    return Err(UserError::TooManyRules {
                        access_key: access_key.to_owned(),
                    });
                }
                user.rules.push(rule);
            }
            Ok(())
        })
    }

    /// Removes `rule` from the user's rules; `false` when it had no such rule.
    pub fn revoke(&self, access_key: &str, rule: &Rule) -> Result<bool, UserError> {
        let mut removed = false;
        self.change_user(access_key, |user| {
            let before = user.rules.len();
            user.rules.retain(|r| r != rule);
            removed = user.rules.len() != before;
            Ok(())
        })?;
        Ok(removed)
    }

    fn change_user(
        &self,
        access_key: &str,
        f: impl FnOnce(&mut User) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        self.change(|users| {
            let user = users
                .get_mut(access_key)
                .ok_or_else(|| UserError::NotFound(access_key.to_owned()))?;
            f(Arc::make_mut(user))
        })
    }

    /// Applies `f` to a copy, writes the copy durably, then publishes it.
    fn change(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Arc<User>>) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        let _writing = self.writing.lock();
        let mut next = (**self.users.read()).clone();
        f(&mut next)?;
        let file = UserFile {
            version: FORMAT_VERSION,
            users: next.values().map(|u| (**u).clone()).collect(),
        };
        let file_err = |reason: String| UserError::File {
            path: self.path.clone(),
            reason,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| file_err(e.to_string()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| file_err(e.to_string()))?;
        }
        rocketlog_common::durable_file::replace(&self.path, &bytes, Some(0o600))
            .map_err(|e| file_err(e.to_string()))?;
        *self.users.write() = Arc::new(next);
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(decision: Decision, action: Action, kind: ResourceKind, pattern: &str) -> Rule {
        Rule {
            decision,
            action,
            kind,
            pattern: pattern.into(),
        }
    }

    fn user(rules: Vec<Rule>) -> User {
        User {
            access_key: "app".into(),
            secret_key: "secret-key".into(),
            super_user: false,
            rules,
        }
    }

    #[test]
    fn exact_and_prefix_rules_allow_and_deny_wins() {
        let u = user(vec![
            rule(
                Decision::Allow,
                Action::Pub,
                ResourceKind::Topic,
                "orders-*",
            ),
            rule(
                Decision::Deny,
                Action::Pub,
                ResourceKind::Topic,
                "orders-secret",
            ),
            rule(Decision::Allow, Action::Sub, ResourceKind::Topic, "events"),
            rule(Decision::Allow, Action::Sub, ResourceKind::Group, "*"),
        ]);
        assert!(u.check(&[Need::topic(Action::Pub, "orders-eu")]).is_ok());
        let denied = u
            .check(&[Need::topic(Action::Pub, "orders-secret")])
            .unwrap_err();
        assert!(denied.denied_by.is_some());
        let none = u.check(&[Need::topic(Action::Pub, "events")]).unwrap_err();
        assert_eq!(none.denied_by, None);
        assert_eq!(none.need.name, "events");
        assert!(u
            .check(&[Need::topic(Action::Sub, "events"), Need::group("any-group")])
            .is_ok());
        // Every need must pass: the second is refused.
        let second = u
            .check(&[
                Need::topic(Action::Sub, "events"),
                Need::topic(Action::Sub, "other"),
            ])
            .unwrap_err();
        assert_eq!(second.need.name, "other");
        // Exact names are not prefixes.
        assert!(u.check(&[Need::topic(Action::Sub, "events2")]).is_err());
        let root = User {
            super_user: true,
            ..user(vec![])
        };
        assert!(root.check(&[Need::topic(Action::Pub, "anything")]).is_ok());
    }

    #[test]
    fn patterns_are_checked() {
        for bad in ["", "a*b", "**", "a b", "x,y"] {
            assert!(
                rule(Decision::Allow, Action::Pub, ResourceKind::Topic, bad)
                    .validate()
                    .is_err(),
                "{bad:?}"
            );
        }
        for good in ["*", "orders", "orders-*", "%RETRY%group"] {
            rule(Decision::Allow, Action::Pub, ResourceKind::Topic, good)
                .validate()
                .unwrap();
        }
    }

    #[test]
    fn changes_survive_a_reopen_and_secrets_stay_out_of_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        assert!(store.is_empty());
        store.put("app", "secret-key-1", false).unwrap();
        let r = rule(Decision::Allow, Action::Pub, ResourceKind::Topic, "t-*");
        store.grant("app", r.clone()).unwrap();
        store.grant("app", r.clone()).unwrap();
        store.put("admin", "admin-secret", true).unwrap();
        // A new secret keeps the rules.
        store.put("app", "secret-key-2", false).unwrap();
        assert!(matches!(
            store.grant("ghost", r.clone()),
            Err(UserError::NotFound(_))
        ));
        assert!(store.put("bad key", "secret-key", false).is_err());
        assert!(store.put("short", "1234567", false).is_err());

        let reopened = UserStore::open(dir.path()).unwrap();
        let app = reopened.get("app").unwrap();
        assert_eq!(app.secret_key, "secret-key-2");
        assert_eq!(app.rules, vec![r.clone()]);
        assert!(reopened.get("admin").unwrap().super_user);
        assert!(!format!("{app:?}").contains("secret-key-2"));

        assert!(reopened.revoke("app", &r).unwrap());
        assert!(!reopened.revoke("app", &r).unwrap());
        reopened.delete("admin").unwrap();
        assert!(matches!(
            reopened.delete("admin"),
            Err(UserError::NotFound(_))
        ));
        let again = UserStore::open(dir.path()).unwrap();
        assert_eq!(again.list().len(), 1);
        assert!(again.get("app").unwrap().rules.is_empty());
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let e = UserStore::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("users.json"), "{e}");
    }

    #[test]
    fn an_install_mirrors_the_exported_users_durably() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let master = UserStore::open(a.path()).unwrap();
        master.put("admin", "admin-secret", true).unwrap();
        master.put("app", "app-secret-1", false).unwrap();
        let slave = UserStore::open(b.path()).unwrap();
        slave.put("local", "local-secret", false).unwrap();
        let before = slave.version();
        slave.install(&master.export()).unwrap();
        assert!(slave.version() > before);
        let keys = |s: &UserStore| {
            s.list()
                .iter()
                .map(|u| u.access_key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&slave), vec!["admin", "app"]);
        // Nothing changed: nothing written.
        let v = slave.version();
        slave.install(&master.export()).unwrap();
        assert_eq!(slave.version(), v);
        assert_eq!(
            keys(&UserStore::open(b.path()).unwrap()),
            vec!["admin", "app"]
        );
        assert!(slave.install(b"not json").is_err());
        assert_eq!(keys(&slave), vec!["admin", "app"]);
    }
}
