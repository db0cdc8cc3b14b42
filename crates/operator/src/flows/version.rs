//! Just enough semantic versioning to refuse downgrades: `MAJOR.MINOR.PATCH[-PRERELEASE]`
//! (the form `spec.version` is validated to), ordered as semver orders them.

use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    core: [u64; 3],
    pre: Vec<String>,
}

impl Version {
    pub fn parse(text: &str) -> Option<Self> {
        let (core, pre) = match text.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (text, None),
        };
        let mut parts = core.split('.');
        let mut next = || -> Option<u64> {
            let part = parts.next()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let parsed = [next()?, next()?, next()?];
        if parts.next().is_some() {
            return None;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) if p.split('.').all(|id| !id.is_empty()) => p.split('.').map(str::to_string).collect(),
            Some(_) => return None,
        };
        Some(Self { core: parsed, pre })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                // A release ranks above its pre-releases.
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => compare_pre(&self.pre, &other.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Numeric identifiers compare as numbers and rank below alphanumeric ones; a shorter list of
/// equal identifiers ranks first.
fn compare_pre(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::Version;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn orders_like_semver() {
        let ascending = [
            "2.6.2",
            "2.7.0-alpha",
            "2.7.0-alpha.1",
            "2.7.0-alpha.beta",
            "2.7.0-beta.2",
            "2.7.0-beta.11",
            "2.7.0-rc.1",
            "2.7.0",
            "2.7.2",
            "2.10.0",
            "10.0.0",
        ];
        for pair in ascending.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("2.7.2"), v("2.7.2"));
    }

    #[test]
    fn rejects_what_is_not_a_version() {
        for s in [
            "",
            "2.7",
            "v2.7.2",
            "2.7.2.1",
            "2.x.1",
            "2.7.2-",
            "2.7.2-a..b",
            "latest",
        ] {
            assert_eq!(Version::parse(s), None, "{s}");
        }
    }
}
