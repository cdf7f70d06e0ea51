//! Builds a child's environment from `process/start`'s `env` and optional `envPolicy`
//! (docs/protocol.md §6.1). Pure functions over the server's own environment.

use std::collections::BTreeMap;

use exec_protocol::{EnvPolicy, Inherit};

const CORE_VARIABLES: [&str; 11] = [
    "PATH", "SHELL", "TMPDIR", "TEMP", "TMP", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LOGNAME",
    "USER",
];
const DEFAULT_EXCLUDES: [&str; 3] = ["*KEY*", "*SECRET*", "*TOKEN*"];

/// The child's environment. Without a policy it is exactly `env`.
pub fn child_environment(
    server_env: impl IntoIterator<Item = (String, String)>,
    policy: Option<&EnvPolicy>,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut result = BTreeMap::new();
    if let Some(policy) = policy {
        result = server_env
            .into_iter()
            .filter(|(name, _)| match policy.inherit {
                Inherit::All => true,
                Inherit::Core => CORE_VARIABLES.contains(&name.as_str()),
                Inherit::None => false,
            })
            .filter(|(name, _)| {
                policy.ignore_default_excludes
                    || !DEFAULT_EXCLUDES.iter().any(|glob| glob_matches(glob, name))
            })
            .filter(|(name, _)| !policy.exclude.iter().any(|glob| glob_matches(glob, name)))
            .collect();
        result.extend(policy.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !policy.include_only.is_empty() {
            result.retain(|name, _| {
                policy
                    .include_only
                    .iter()
                    .any(|glob| glob_matches(glob, name))
            });
        }
    }
    result.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    result
}

/// Case-insensitive glob with `*` (any run) and `?` (one character).
fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.to_ascii_uppercase().chars().collect();
    let name: Vec<char> = name.to_ascii_uppercase().chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    n = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_env() -> Vec<(String, String)> {
        [
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("AWS_SECRET_ACCESS", "s"),
            ("GITHUB_TOKEN", "t"),
            ("my_api_key", "k"),
            ("EDITOR", "vi"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn without_policy_env_is_exact() {
        let env = map(&[("A", "1")]);
        assert_eq!(child_environment(server_env(), None, &env), env);
    }

    #[test]
    fn core_inherit_keeps_only_core_names() {
        let policy = EnvPolicy::default();
        let result = child_environment(server_env(), Some(&policy), &BTreeMap::new());
        assert_eq!(result, map(&[("HOME", "/root"), ("PATH", "/bin")]));
    }

    #[test]
    fn default_excludes_drop_secrets_case_insensitively() {
        let policy = EnvPolicy {
            inherit: Inherit::All,
            ..Default::default()
        };
        let result = child_environment(server_env(), Some(&policy), &BTreeMap::new());
        assert_eq!(
            result.keys().collect::<Vec<_>>(),
            ["EDITOR", "HOME", "PATH"]
        );
        let policy = EnvPolicy {
            inherit: Inherit::All,
            ignore_default_excludes: true,
            ..Default::default()
        };
        assert_eq!(
            child_environment(server_env(), Some(&policy), &BTreeMap::new()).len(),
            6
        );
    }

    #[test]
    fn exclude_set_include_only_then_env_overlay() {
        let policy = EnvPolicy {
            inherit: Inherit::All,
            exclude: vec!["ED*".into()],
            set: map(&[("X_SET", "1"), ("PATH", "/usr/bin")]),
            include_only: vec!["x_*".into(), "PATH".into()],
            ..Default::default()
        };
        let result = child_environment(server_env(), Some(&policy), &map(&[("Z", "2")]));
        assert_eq!(
            result,
            map(&[("PATH", "/usr/bin"), ("X_SET", "1"), ("Z", "2")])
        );
    }

    #[test]
    fn none_inherit_starts_empty() {
        let policy = EnvPolicy {
            inherit: Inherit::None,
            ..Default::default()
        };
        assert!(child_environment(server_env(), Some(&policy), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn glob_semantics() {
        assert!(glob_matches("*KEY*", "my_api_key"));
        assert!(glob_matches("A?C", "abc"));
        assert!(!glob_matches("A?C", "abbc"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
    }
}
