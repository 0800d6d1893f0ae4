//! Kubernetes' atomic writer for configMap, secret, downwardAPI and projected volumes: the files live
//! in a timestamped directory, `..data` is a symlink to it, and each top-level name is a symlink
//! through `..data`. An update writes a new directory and swaps `..data` with one rename, so a
//! container reading the volume sees either the old set of files or the new one, never a mix.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

/// The symlink naming the current content.
const DATA: &str = "..data";

/// One file of a volume: relative path, content, mode.
pub type File = (String, Vec<u8>, u32);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Whether `dir` already holds exactly `files`.
fn unchanged(dir: &Path, files: &[File]) -> bool {
    let current = dir.join(DATA);
    let Ok(entries) = count_files(&current) else {
        return false;
    };
    entries == files.len()
        && files.iter().all(|(name, bytes, mode)| {
            let p = current.join(name);
            std::fs::read(&p).is_ok_and(|b| &b == bytes)
                && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode)
        })
}

fn count_files(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            n += count_files(&e.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

/// Makes `dir` hold exactly `files`, atomically; returns whether anything changed.
pub fn write(dir: &Path, files: &[File]) -> Result<bool, String> {
    for (name, _, _) in files {
        if name.is_empty()
            || name.starts_with('/')
            || name.starts_with("..")
            || name.split('/').any(|p| p == ".." || p.is_empty())
        {
            return Err(format!("invalid file name {name:?} in volume"));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if unchanged(dir, files) {
        return Ok(false);
    }
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh).map_err(io(&fresh))?;
    for (name, bytes, mode) in files {
        let path = fresh.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(io(&path))?;
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, dir.join(DATA)).map_err(io(dir))?;
    // Top-level names point through ..data; names no longer present go.
    let mut tops: Vec<&str> = files
        .iter()
        .filter_map(|(n, _, _)| n.split('/').next())
        .collect();
    tops.sort();
    tops.dedup();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(top), &link).map_err(io(&link))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(&name.as_str()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_swaps_and_prunes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("vol");
        let v1 = vec![
            ("a".to_string(), b"1".to_vec(), 0o644),
            ("sub/b".to_string(), b"2".to_vec(), 0o600),
        ];
        assert!(write(&dir, &v1).unwrap());
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(dir.join("sub/b")).unwrap(), b"2");
        assert_eq!(
            std::fs::metadata(dir.join("sub/b"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert!(!write(&dir, &v1).unwrap(), "same content: nothing to do");
        let first = std::fs::read_link(dir.join(DATA)).unwrap();

        let v2 = vec![("a".to_string(), b"changed".to_vec(), 0o644)];
        assert!(write(&dir, &v2).unwrap());
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"changed");
        assert!(
            std::fs::symlink_metadata(dir.join("sub")).is_err(),
            "a name no longer present is gone"
        );
        assert!(!dir.join(first).exists(), "the old generation is removed");
        assert!(write(&dir, &[("../x".to_string(), vec![], 0o644)]).is_err());
    }
}
