//! What the viewer remembers between runs (window geometry, sync settings, threshold, view mode,
//! recent studies, and the reader's own finding labels): a small versioned JSON file in the config folder, written atomically when
//! it changes; a missing, corrupt or newer file is ignored (logged), never a panic.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The version this build writes; a newer file is ignored rather than misread.
pub const PREFS_VERSION: u32 = 1;

/// Overrides where the preferences live (tests, portable installs).
pub const ENV_CONFIG_DIR: &str = "TANDEM_CONFIG_DIR";

/// How many recent studies File → Open recent lists.
pub const MAX_RECENT: usize = 10;

/// How many labels of the reader's own the relabel list takes from the file.
pub const MAX_LABELS: usize = 100;

const FILE_NAME: &str = "viewer.json";

/// The window's inner size and outer position, in points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowGeometry {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

impl WindowGeometry {
    /// Something a window can be given: finite, not absurdly small or large.
    pub fn is_sane(&self) -> bool {
        [self.x, self.y, self.width, self.height].iter().all(|v| v.is_finite())
            && (200.0..=20_000.0).contains(&self.width)
            && (200.0..=20_000.0).contains(&self.height)
            && self.x.abs() < 50_000.0
            && self.y.abs() < 50_000.0
    }
}

/// Which actions mirror between panes (as `app::SyncSettings`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPrefs {
    pub scroll: bool,
    pub zoom_pan: bool,
    pub window: bool,
    pub registered: bool,
}

/// A study (or pair) opened before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Recent {
    Pair { prior: PathBuf, current: PathBuf },
    Folder { path: PathBuf },
}

impl Recent {
    /// What File → Open recent shows: the file names (folders, when the names are the same).
    pub fn label(&self) -> String {
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string());
        match self {
            Recent::Pair { prior, current } => format!("{} · {}", name(prior), name(current)),
            Recent::Folder { path } => format!("{} (folder)", name(path)),
        }
    }

    /// The paths it needs, to check they are still there.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Recent::Pair { prior, current } => vec![prior, current],
            Recent::Folder { path } => vec![path],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prefs {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowGeometry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncPrefs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// `"side-by-side"`, `"flicker"`, `"fade"`, `"subtraction"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_mode: Option<String>,
    /// Most recent first.
    #[serde(default)]
    pub recent: Vec<Recent>,
    /// Labels the relabel list offers besides the built-in ones; edited by hand, kept as written.
    /// Absent from files of earlier builds, which read the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl Default for Prefs {
    fn default() -> Self {
        Prefs { version: PREFS_VERSION, window: None, sync: None, threshold: None, view_mode: None, recent: Vec::new(), labels: Vec::new() }
    }
}

impl Prefs {
    /// `recent` put first (once), the list kept to `MAX_RECENT`.
    pub fn remember(&mut self, recent: Recent) {
        self.recent.retain(|r| *r != recent);
        self.recent.insert(0, recent);
        self.recent.truncate(MAX_RECENT);
    }

    /// Parses a stored file; anything but a readable file of a version this build knows is `Err`.
    pub fn parse(bytes: &[u8]) -> Result<Prefs, String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        match v.get("version").and_then(serde_json::Value::as_u64) {
            Some(n) if n <= u64::from(PREFS_VERSION) => {}
            Some(n) => return Err(format!("written by a newer Tandem (version {n})")),
            None => return Err("no version".into()),
        }
        let mut p: Prefs = serde_json::from_value(v).map_err(|e| e.to_string())?;
        p.version = PREFS_VERSION;
        // Values out of range are dropped, not clamped into something nobody chose.
        p.window = p.window.filter(WindowGeometry::is_sane);
        p.threshold = p.threshold.filter(|t| (0.0..=1.0).contains(t));
        p.recent.truncate(MAX_RECENT);
        p.labels = clean_labels(p.labels.iter().map(String::as_str));
        p.labels.truncate(MAX_LABELS);
        Ok(p)
    }

    /// The preferences in `dir`, or the defaults when there are none or they cannot be read.
    pub fn load(dir: &Path) -> Prefs {
        let path = dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Prefs::default(),
            Err(e) => {
                log::warn!("preferences ignored: {e} ({})", path.display());
                return Prefs::default();
            }
        };
        Prefs::parse(&bytes).unwrap_or_else(|e| {
            log::warn!("preferences ignored: {e} ({})", path.display());
            Prefs::default()
        })
    }

    /// Writes them to `dir` (created if needed), atomically.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(&dir.join(FILE_NAME), &bytes)
    }
}

/// Labels trimmed, empty ones dropped, each kept once (first occurrence, in order).
pub fn clean_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in labels.into_iter().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.iter().any(|o| o == l) {
            out.push(l.to_string());
        }
    }
    out
}

/// Where the preferences live: `TANDEM_CONFIG_DIR`, else `$XDG_CONFIG_HOME/tandem`, else
/// `~/.config/tandem` (`%APPDATA%\tandem` on Windows); `None` when none of these is known.
pub fn default_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var(ENV_CONFIG_DIR) {
        return Some(d);
    }
    if cfg!(windows) {
        return var("APPDATA").map(|d| d.join("tandem"));
    }
    var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config"))).map(|d| d.join("tandem"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_round_trip_and_bad_files_give_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Prefs::load(dir.path()), Prefs::default(), "no file yet");
        let mut p = Prefs {
            window: Some(WindowGeometry { x: 10.0, y: 20.0, width: 1200.0, height: 800.0 }),
            sync: Some(SyncPrefs { scroll: false, zoom_pan: true, window: false, registered: true }),
            threshold: Some(0.4),
            view_mode: Some("fade".into()),
            ..Prefs::default()
        };
        p.remember(Recent::Folder { path: "/a".into() });
        p.remember(Recent::Pair { prior: "/p.dcm".into(), current: "/c.dcm".into() });
        p.remember(Recent::Folder { path: "/a".into() });
        assert_eq!(p.recent[0], Recent::Folder { path: "/a".into() });
        assert_eq!(p.recent.len(), 2, "remembered once");
        p.save(dir.path()).unwrap();
        assert_eq!(Prefs::load(dir.path()), p);
        for bad in [&b"{\"version\": 1, \"threshold\": "[..], b"[]", b"{\"version\": 99}", b"{\"window\": 3}", b"\xff\xfe"] {
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            assert_eq!(Prefs::load(dir.path()), Prefs::default(), "{}", String::from_utf8_lossy(bad));
        }
        // Out-of-range values are dropped, the rest kept.
        std::fs::write(
            dir.path().join(FILE_NAME),
            br#"{"version": 1, "threshold": 7.0, "window": {"x": 0, "y": 0, "width": 1e9, "height": 10}, "view_mode": "fade"}"#,
        )
        .unwrap();
        let p = Prefs::load(dir.path());
        assert_eq!((p.threshold, p.window, p.view_mode.as_deref()), (None, None, Some("fade")));
        // Labels of the reader's own: cleaned, and kept through a save.
        std::fs::write(dir.path().join(FILE_NAME), br#"{"version": 1, "labels": [" cyst ", "", "cyst", "ground-glass"]}"#).unwrap();
        let p = Prefs::load(dir.path());
        assert_eq!(p.labels, ["cyst", "ground-glass"]);
        p.save(dir.path()).unwrap();
        assert_eq!(Prefs::load(dir.path()).labels, ["cyst", "ground-glass"]);
        let mut many = Prefs::default();
        (0..20).for_each(|k| many.remember(Recent::Folder { path: format!("/{k}").into() }));
        assert_eq!(many.recent.len(), MAX_RECENT);
    }
}
