//! Backup object keys: `<pathPrefix>/<namespace>/<cluster>/<YYYYMMDDTHHMMSSZ>-<8 hex>.snap`.
//!
//! The UTC timestamp sorts lexically and is what retention orders by, so it does not depend on
//! the store's `LastModified` (which a copy or a bucket migration would reset). The random
//! suffix keeps two backups of the same second apart.

use jiff::Timestamp;
use jiff::tz::TimeZone;

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const SUFFIX: &str = ".snap";

/// A backup key and the time encoded in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupKey {
    pub key: String,
    pub time: Timestamp,
}

/// `<pathPrefix>/<namespace>/<cluster>`: the "directory" of one cluster's backups. Empty
/// segments of the prefix (leading, trailing or doubled `/`) are dropped.
pub fn cluster_prefix(path_prefix: &str, namespace: &str, cluster: &str) -> String {
    path_prefix
        .split('/')
        .chain([namespace, cluster])
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// The key of a backup taken at `time` with suffix `id`.
pub fn backup_key(path_prefix: &str, namespace: &str, cluster: &str, time: Timestamp, id: u32) -> String {
    let stamp = time.to_zoned(TimeZone::UTC).strftime(TIME_FORMAT);
    format!(
        "{}/{stamp}-{id:08x}{SUFFIX}",
        cluster_prefix(path_prefix, namespace, cluster)
    )
}

/// A fresh key for a backup taken now.
pub fn new_backup_key(path_prefix: &str, namespace: &str, cluster: &str, now: Timestamp) -> BackupKey {
    let key = backup_key(path_prefix, namespace, cluster, now, rand::random());
    let time = parse_key_time(&key).expect("a key we just built parses");
    BackupKey { key, time }
}

/// The time encoded in a backup key, or `None` for objects that are not backups in this format
/// (those are never touched by retention).
pub fn parse_key_time(key: &str) -> Option<Timestamp> {
    let name = key.rsplit('/').next()?.strip_suffix(SUFFIX)?;
    let (stamp, id) = name.split_once('-')?;
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || stamp.len() != 16 {
        return None;
    }
    let civil = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp).ok()?;
    civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn keys_have_the_documented_shape() {
        let t = at("2026-11-24T09:05:07.123Z");
        assert_eq!(
            backup_key("backups", "team-a", "vault", t, 0xdead_beef),
            "backups/team-a/vault/20261124T090507Z-deadbeef.snap"
        );
        // Prefix slashes are normalized; an empty prefix leaves none.
        assert_eq!(
            backup_key("/a//b/", "ns", "c", t, 1),
            "a/b/ns/c/20261124T090507Z-00000001.snap"
        );
        assert_eq!(backup_key("", "ns", "c", t, 1), "ns/c/20261124T090507Z-00000001.snap");
        assert_eq!(cluster_prefix("", "ns", "c"), "ns/c");
    }

    #[test]
    fn key_times_round_trip_to_the_second() {
        let now = at("2026-01-02T03:04:05.999Z");
        let fresh = new_backup_key("p", "ns", "c", now);
        assert_eq!(fresh.time, at("2026-01-02T03:04:05Z"));
        assert!(fresh.key.starts_with("p/ns/c/20260102T030405Z-") && fresh.key.ends_with(".snap"));
        assert_eq!(parse_key_time(&fresh.key), Some(fresh.time));
    }

    #[test]
    fn foreign_objects_are_not_backups() {
        for key in [
            "p/ns/c/notes.txt",
            "p/ns/c/20260102T030405Z-deadbeef.snap.tmp",
            "p/ns/c/20260102T030405Z-xyz.snap",
            "p/ns/c/20261302T030405Z-deadbeef.snap",
            "p/ns/c/2026-01-02T03:04:05Z-deadbeef.snap",
        ] {
            assert_eq!(parse_key_time(key), None, "{key}");
        }
    }
}
