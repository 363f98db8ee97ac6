//! Crash-safe file writes (a temporary file in the same folder, fsync, then rename over the
//! target, so a reader only ever sees the old or the new content) and the output checks every
//! writing command makes first, so that no command destroys what a user has.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (the folder must exist). A symlink is followed and its
/// target replaced (the link stays a link); an existing file keeps its permission mode; the
/// temporary file is removed on error, and temporaries that killed writers left beside the
/// target are swept first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// `write_atomic` with the content written by `fill` (which tests use to fail half-way).
fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut File) -> std::io::Result<()>) -> std::io::Result<()> {
    let target = resolve_symlinks(path)?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    sweep_stale_temps(&dir, &name);
    // Permissions of what is replaced; a new file gets the process's defaults (umask).
    let permissions = std::fs::metadata(&target).ok().filter(|m| m.is_file()).map(|m| m.permissions());
    let tmp = dir.join(format!("{}{}-{}", temp_prefix(&name), std::process::id(), unique()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Some(p) = permissions {
            f.set_permissions(p)?;
        }
        fill(&mut f)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &target)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `path` with every symlink in its last component followed (a dangling link gives the path it
/// points to, which the write then creates).
fn resolve_symlinks(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(parent) if link.is_relative() => parent.join(link),
                    _ => link,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other(format!("too many levels of symbolic links ({})", path.display())))
}

/// Temporary files of the target `name` start with this, then `PID-N`.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Removes temporary files of the target `name` in `dir` that a writer which is no longer
/// running left behind (killed mid-save). Temporaries of live processes, this one included,
/// may be saves in progress and are kept. Returns how many were removed.
pub fn sweep_stale_temps(dir: &Path, name: &str) -> usize {
    let prefix = temp_prefix(name);
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let Some(pid) = temp_owner(&file_name, &prefix) else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && !writer_may_be_running(pid, &meta) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The PID in `.NAME.tmp-PID-N`, when `file_name` is such a temporary file.
fn temp_owner(file_name: &OsStr, prefix: &str) -> Option<u32> {
    let rest = file_name.to_str()?.strip_prefix(prefix)?;
    let (pid, n) = rest.split_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn writer_may_be_running(pid: u32, meta: &std::fs::Metadata) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if Path::new("/proc/self").exists() {
        return Path::new("/proc").join(pid.to_string()).exists();
    }
    // Without /proc there is no cheap liveness check: only a day-old temporary counts as stale.
    let age = meta.modified().ok().and_then(|t| t.elapsed().ok());
    age.is_none_or(|a| a < std::time::Duration::from_secs(24 * 3600))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0);
    (COUNTER.fetch_add(1, Ordering::Relaxed) << 32) ^ nanos
}

/// Whether `a` and `b` name the same file: the same (device, inode) where both exist on Unix
/// (hard links and symlinks included), else the same canonical path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (ma.dev(), ma.ino()) == (mb.dev(), mb.ino());
        }
    }
    match (canonical_or_planned(a), canonical_or_planned(b)) {
        (Some(ca), Some(cb)) => ca == cb,
        _ => false,
    }
}

/// The canonical path of an existing file, or of a file about to be created (its canonical
/// folder and its name).
fn canonical_or_planned(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Some(c);
    }
    let target = resolve_symlinks(p).ok()?;
    let name = target.file_name()?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(dir).ok()?.join(name))
}

/// Checks that writing `output` destroys nothing: it must not be any of `inputs` (same file,
/// however named), and an existing file is replaced only when `force` is set. The error is the
/// message to show the user.
pub fn check_output(output: &Path, inputs: &[&Path], force: bool) -> Result<(), String> {
    if let Some(input) = inputs.iter().find(|i| same_file(output, i)) {
        return Err(if input.as_os_str() == output.as_os_str() {
            format!("the output is also an input; write it elsewhere ({})", output.display())
        } else {
            format!("the output is also an input; write it elsewhere ({} is {})", output.display(), input.display())
        });
    }
    if output.is_dir() {
        return Err(format!("the output is a folder ({})", output.display()));
    }
    if !force && std::fs::symlink_metadata(output).is_ok() {
        return Err(format!("{} exists; pass --force to replace it", output.display()));
    }
    Ok(())
}

/// Refuses two outputs of one command that are the same file (each would clobber the other).
pub fn check_distinct_outputs(outputs: &[&Path]) -> Result<(), String> {
    for (k, a) in outputs.iter().enumerate() {
        if let Some(b) = outputs[k + 1..].iter().find(|b| same_file(a, b)) {
            return Err(format!("two outputs are the same file; write them apart ({} and {})", a.display(), b.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_original_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.json");
        write_atomic(&p, b"original").unwrap();
        let err = write_atomic_with(&p, |f| {
            f.write_all(b"half a docu")?;
            Err(std::io::Error::other("disk full (injected)"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("injected"));
        assert_eq!(std::fs::read(&p).unwrap(), b"original");
        assert_eq!(names(dir.path()), ["doc.json"]);
        // A rename that fails (the target is a non-empty folder) cleans up too.
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("x"), b"x").unwrap();
        assert!(write_atomic(&folder, b"data").is_err());
        assert_eq!(names(dir.path()), ["doc.json", "folder"]);
    }

    #[test]
    fn temps_of_dead_writers_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.json");
        // A PID that is surely not running: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!(".doc.json.tmp-{dead}-77"));
        let live = dir.path().join(format!(".doc.json.tmp-{}-78", std::process::id()));
        let other = dir.path().join(format!(".other.json.tmp-{dead}-79"));
        let look_alike = dir.path().join(format!(".doc.json.tmp-{dead}-x"));
        for f in [&stale, &live, &other, &look_alike] {
            std::fs::write(f, b"partial").unwrap();
        }
        write_atomic(&p, b"new").unwrap();
        assert!(!stale.exists(), "a dead writer's temporary is swept");
        assert!(live.exists() && other.exists() && look_alike.exists(), "{:?}", names(dir.path()));
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_of_the_original_is_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.json");
        std::fs::write(&p, b"secret").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"still secret").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"again").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_stays_a_link_and_its_target_is_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        let target = dir.path().join("real/doc.json");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("doc.json");
        std::os::unix::fs::symlink("real/doc.json", &link).unwrap();
        // A link to a link is followed to the end.
        let link2 = dir.path().join("doc2.json");
        std::os::unix::fs::symlink(&link, &link2).unwrap();
        write_atomic(&link2, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(std::fs::symlink_metadata(&link2).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(names(&dir.path().join("real")), ["doc.json"]);
        // A dangling link creates its target.
        let dangling = dir.path().join("later.json");
        std::os::unix::fs::symlink("real/later.json", &dangling).unwrap();
        write_atomic(&dangling, b"created").unwrap();
        assert_eq!(std::fs::read(dir.path().join("real/later.json")).unwrap(), b"created");
    }

    #[test]
    fn outputs_that_are_inputs_or_exist_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("prior.png");
        std::fs::write(&input, b"pixels").unwrap();
        let e = check_output(&input, &[&input], true).unwrap_err();
        assert!(e.contains("also an input"), "{e}");
        // Another spelling of the same path.
        let spelled = dir.path().join(".").join("prior.png");
        assert!(check_output(&spelled, &[&input], true).unwrap_err().contains("also an input"));
        #[cfg(unix)]
        {
            let hard = dir.path().join("hard.png");
            std::fs::hard_link(&input, &hard).unwrap();
            assert!(check_output(&hard, &[&input], true).unwrap_err().contains("also an input"));
            let soft = dir.path().join("soft.png");
            std::os::unix::fs::symlink(&input, &soft).unwrap();
            assert!(check_output(&soft, &[&input], true).unwrap_err().contains("also an input"));
        }
        let other = dir.path().join("out.json");
        std::fs::write(&other, b"{}").unwrap();
        let e = check_output(&other, &[&input], false).unwrap_err();
        assert!(e.ends_with("exists; pass --force to replace it"), "{e}");
        assert!(check_output(&other, &[&input], true).is_ok());
        assert!(check_output(&dir.path().join("new.json"), &[&input], false).is_ok());
        assert!(check_output(dir.path(), &[&input], true).unwrap_err().contains("folder"));
        let a = dir.path().join("a.json");
        assert!(check_distinct_outputs(&[&a, &dir.path().join("./a.json")]).is_err());
        assert!(check_distinct_outputs(&[&a, &other]).is_ok());
    }
}
