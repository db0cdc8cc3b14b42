//! Which backups to delete. Pure, so the policy is unit-tested without a store.

use crate::ObjectInfo;
use crate::key::parse_key_time;
use jiff::Timestamp;
use std::time::Duration;

/// Keep at most `max_count` backups and none older than `max_age`; `None` disables a limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_count: Option<usize>,
    pub max_age: Option<Duration>,
}

/// The keys to delete, oldest first. Only objects whose key carries a backup timestamp are
/// considered (anything else under the prefix is left alone), they are ordered by that
/// timestamp (not by `LastModified`), and the newest backup is always kept, so a short
/// `max_age` or a `max_count` of 0 can never delete every backup.
pub fn retention_plan(objects: &[ObjectInfo], now: Timestamp, retention: Retention) -> Vec<String> {
    let mut backups: Vec<(Timestamp, Timestamp, &str)> = objects
        .iter()
        .filter_map(|o| parse_key_time(&o.key).map(|t| (t, o.last_modified, o.key.as_str())))
        .collect();
    // Newest first. Two backups of the same second are told apart by when the store got them,
    // then by key, so the order is total and a fresh backup is not mistaken for an older one.
    backups.sort_by(|a, b| b.cmp(a));
    let keep_count = retention.max_count.unwrap_or(usize::MAX).max(1);
    let cutoff = retention.max_age.and_then(|age| {
        let age = jiff::SignedDuration::try_from(age).ok()?;
        now.checked_sub(age).ok()
    });
    let mut doomed: Vec<String> = backups
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(i, (time, _, _))| *i >= keep_count || cutoff.is_some_and(|c| *time < c))
        .map(|(_, (_, _, key))| key.to_string())
        .collect();
    doomed.reverse();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::backup_key;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn object(key: &str, last_modified: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: 1,
            last_modified: at(last_modified),
        }
    }

    /// Backups one hour apart, 00:00 … (n-1):00, listed in a shuffled order.
    fn hourly(n: u32) -> Vec<ObjectInfo> {
        let mut v: Vec<ObjectInfo> = (0..n)
            .map(|h| {
                let t = at(&format!("2026-01-01T{h:02}:00:00Z"));
                // LastModified deliberately disagrees with the key (e.g. after a bucket copy).
                object(&backup_key("p", "ns", "c", t, h), "2030-01-01T00:00:00Z")
            })
            .collect();
        v.reverse();
        v.swap(0, (n / 2) as usize);
        v
    }

    fn hours(keys: &[String]) -> Vec<String> {
        keys.iter().map(|k| k[7..18].to_string()).collect()
    }

    #[test]
    fn keeps_the_newest_max_count_by_key_time() {
        let now = at("2026-01-02T00:00:00Z");
        let plan = retention_plan(
            &hourly(5),
            now,
            Retention {
                max_count: Some(2),
                max_age: None,
            },
        );
        assert_eq!(hours(&plan), ["20260101T00", "20260101T01", "20260101T02"]);
    }

    #[test]
    fn deletes_what_is_older_than_max_age() {
        let now = at("2026-01-01T05:30:00Z");
        let retention = Retention {
            max_count: None,
            max_age: Some(Duration::from_secs(3 * 3600)),
        };
        // Cutoff 02:30: 00:00, 01:00 and 02:00 go.
        assert_eq!(
            hours(&retention_plan(&hourly(5), now, retention)),
            ["20260101T00", "20260101T01", "20260101T02"]
        );
    }

    #[test]
    fn both_limits_apply_and_the_newest_is_always_kept() {
        let now = at("2026-03-01T00:00:00Z");
        let both = Retention {
            max_count: Some(4),
            max_age: Some(Duration::from_secs(60)),
        };
        assert_eq!(retention_plan(&hourly(5), now, both).len(), 4);
        let zero = Retention {
            max_count: Some(0),
            max_age: None,
        };
        assert_eq!(retention_plan(&hourly(3), now, zero).len(), 2);
        assert!(retention_plan(&hourly(3), now, Retention::default()).is_empty());
        assert!(retention_plan(&[], now, both).is_empty());
    }

    #[test]
    fn backups_of_the_same_second_are_ordered_by_arrival() {
        let now = at("2026-03-01T00:00:00Z");
        let t = at("2026-01-01T00:00:00Z");
        // The random suffix of the later backup sorts first; arrival time decides.
        let older = object(&backup_key("p", "ns", "c", t, 0xffff_ffff), "2026-01-01T00:00:00.100Z");
        let newer = object(&backup_key("p", "ns", "c", t, 0), "2026-01-01T00:00:00.900Z");
        let plan = retention_plan(
            &[newer, older.clone()],
            now,
            Retention {
                max_count: Some(1),
                max_age: None,
            },
        );
        assert_eq!(plan, [older.key]);
    }

    #[test]
    fn foreign_objects_are_never_deleted() {
        let now = at("2026-03-01T00:00:00Z");
        let mut objects = hourly(2);
        objects.push(object("p/ns/c/README", "2000-01-01T00:00:00Z"));
        let plan = retention_plan(
            &objects,
            now,
            Retention {
                max_count: Some(1),
                max_age: None,
            },
        );
        assert_eq!(hours(&plan), ["20260101T00"]);
    }
}
