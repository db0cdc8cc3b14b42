//! One controller per kind, and what they share. A controller imports [`jobs`] (executor Jobs),
//! [`watches`] (its watch streams) and `crate::flows` (pure decisions), never another
//! controller: the test below reads the sources to keep it so.

pub mod backup;
pub mod cluster;
pub mod jobs;
pub mod restore;
pub mod watches;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Modules every controller may import: shared plumbing, not a controller.
    const SHARED: [&str; 2] = ["jobs", "watches"];

    /// The controllers `source` (a file of controller `own`) imports through
    /// `crate::controllers::…`, other than itself and the shared modules.
    fn foreign_controllers(own: &str, source: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (_, rest) in source
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .flat_map(|l| {
                l.match_indices("crate::controllers::")
                    .map(move |(i, m)| (i, &l[i + m.len()..]))
            })
        {
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or_default().split(',').collect(),
                None => vec![rest],
            };
            for name in names {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != own && !SHARED.contains(&name.as_str()) && name != "self" {
                    found.push(name);
                }
            }
        }
        found
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("reading the controllers' sources") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn no_controller_imports_another() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controllers");
        let mut violations = Vec::new();
        let mut controllers = 0;
        for entry in std::fs::read_dir(&root).expect("reading src/controllers") {
            let dir = entry.expect("a directory entry").path();
            let own = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if !dir.is_dir() || SHARED.contains(&own.as_str()) {
                continue;
            }
            controllers += 1;
            let mut files = Vec::new();
            rust_files(&dir, &mut files);
            for file in files {
                let source = std::fs::read_to_string(&file).expect("reading a controller source");
                for other in foreign_controllers(&own, &source) {
                    violations.push(format!("{} imports controller {other}", file.display()));
                }
            }
        }
        assert!(
            controllers >= 3,
            "found {controllers} controllers under {}",
            root.display()
        );
        assert!(violations.is_empty(), "{violations:#?}");
    }

    #[test]
    fn the_check_sees_single_and_grouped_imports() {
        assert_eq!(
            foreign_controllers("backup", "use crate::controllers::cluster::upgrade::Plan;"),
            ["cluster"]
        );
        assert_eq!(
            foreign_controllers("cluster", "use crate::controllers::{jobs, backup::decide, cluster};"),
            ["backup"]
        );
        let allowed = "use crate::controllers::jobs::{self, RunningJob};\n// crate::controllers::restore in prose";
        assert!(foreign_controllers("cluster", allowed).is_empty());
    }
}
