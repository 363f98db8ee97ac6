//! The app's side of `viewer::prefs`: settings restored at start, written back when they change
//! (at most twice a second), the recent studies and File → Open recent.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eframe::egui;

use super::{App, AppCommand, Prompt, SyncSettings, ViewMode};
use crate::viewer::Launch;
use crate::viewer::pane::Role;
use crate::viewer::prefs::{Prefs, Recent, SyncPrefs, WindowGeometry};

/// Where the preferences live and what was last written there.
pub struct Remembered {
    dir: PathBuf,
    written: Prefs,
    recent: Vec<Recent>,
    window: Option<WindowGeometry>,
    /// The reader's own labels, written back as they were read.
    pub(super) labels: Vec<String>,
    last_write: Option<Instant>,
}

fn mode_name(mode: ViewMode) -> &'static str {
    match mode {
        ViewMode::SideBySide => "side-by-side",
        ViewMode::Flicker => "flicker",
        ViewMode::Fade => "fade",
        ViewMode::Subtraction => "subtraction",
    }
}

fn mode_from_name(name: &str) -> Option<ViewMode> {
    ViewMode::ALL.into_iter().find(|m| mode_name(*m) == name)
}

impl App {
    /// Restores what `dir` remembers and keeps it up to date from now on; `None` remembers nothing
    /// (tests, or no config folder known).
    pub fn with_prefs(mut self, dir: Option<PathBuf>) -> Self {
        let Some(dir) = dir else { return self };
        let prefs = Prefs::load(&dir);
        if let Some(s) = prefs.sync {
            self.run(AppCommand::SetSync(SyncSettings {
                scroll: s.scroll,
                zoom_pan: s.zoom_pan,
                window: s.window,
                registered: s.registered,
            }));
        }
        if let Some(t) = prefs.threshold {
            self.run(AppCommand::SetThreshold(t));
        }
        if let Some(mode) = prefs.view_mode.as_deref().and_then(mode_from_name) {
            self.view_mode = mode;
        }
        self.remembered = Some(Remembered {
            dir,
            recent: prefs.recent.clone(),
            window: prefs.window,
            labels: prefs.labels.clone(),
            written: prefs,
            last_write: None,
        });
        // What the app was launched with (before it knew where to remember it) is the most recent.
        if let (Some(prior), Some(current)) =
            (self.source_path(Role::Prior).map(Path::to_path_buf), self.source_path(Role::Current).map(Path::to_path_buf))
        {
            self.remember_recent(if prior == current { Recent::Folder { path: prior } } else { Recent::Pair { prior, current } });
        }
        self
    }

    /// The recent studies, most recent first (empty when nothing is remembered).
    pub fn recent(&self) -> &[Recent] {
        self.remembered.as_ref().map_or(&[], |r| r.recent.as_slice())
    }

    pub(super) fn remember_recent(&mut self, recent: Recent) {
        if let Some(r) = self.remembered.as_mut() {
            let mut p = Prefs { recent: std::mem::take(&mut r.recent), ..Prefs::default() };
            p.remember(recent);
            r.recent = p.recent;
        }
    }

    /// Opens a recent study again, or says which of its paths is gone and forgets it.
    pub(super) fn open_recent(&mut self, recent: Recent) {
        if let Some(gone) = recent.paths().into_iter().find(|p| !p.exists()) {
            let message =
                format!("{} cannot be opened again: {} no longer exists. It is removed from Open recent.", recent.label(), gone.display());
            if let Some(r) = self.remembered.as_mut() {
                r.recent.retain(|x| *x != recent);
            }
            self.status = message.clone();
            self.prompt = Some(Prompt::Error(message));
            return;
        }
        let launch = match recent {
            Recent::Pair { prior, current } => Launch::Pair(prior, current),
            Recent::Folder { path } => Launch::Folder(path),
        };
        self.run(AppCommand::Launch(launch));
    }

    /// What would be written now.
    fn prefs_now(&self) -> Option<Prefs> {
        let r = self.remembered.as_ref()?;
        let s = self.sync;
        Some(Prefs {
            window: r.window,
            sync: Some(SyncPrefs { scroll: s.scroll, zoom_pan: s.zoom_pan, window: s.window, registered: s.registered }),
            threshold: Some(self.threshold),
            view_mode: Some(mode_name(self.view_mode).into()),
            recent: r.recent.clone(),
            labels: r.labels.clone(),
            ..Prefs::default()
        })
    }

    /// Notes the window's geometry and writes the preferences when they changed (at most twice a
    /// second, so that a window being dragged is not written every frame).
    pub(super) fn remember(&mut self, ctx: &egui::Context) {
        let geometry = ctx.input(|i| {
            let v = i.viewport();
            match (v.inner_rect, v.outer_rect) {
                (Some(inner), outer) => {
                    let at = outer.unwrap_or(inner).min;
                    Some(WindowGeometry { x: at.x, y: at.y, width: inner.width(), height: inner.height() })
                }
                _ => None,
            }
        });
        if let (Some(r), Some(g)) = (self.remembered.as_mut(), geometry.filter(WindowGeometry::is_sane)) {
            r.window = Some(g);
        }
        if self.remembered.as_ref().is_some_and(|r| r.last_write.is_some_and(|t| t.elapsed() < Duration::from_millis(500))) {
            return;
        }
        self.write_prefs();
    }

    /// Writes the preferences if they changed since last written.
    pub(super) fn write_prefs(&mut self) {
        let Some(now) = self.prefs_now() else { return };
        let Some(r) = self.remembered.as_mut() else { return };
        if now == r.written {
            return;
        }
        r.last_write = Some(Instant::now());
        match now.save(&r.dir) {
            Ok(()) => r.written = now,
            Err(e) => {
                // Not worth a dialog: the next change tries again.
                log::warn!("cannot save the preferences: {e} ({})", r.dir.display());
                r.written = now;
            }
        }
    }
}

impl Drop for App {
    /// What changed in the last half second is written too.
    fn drop(&mut self) {
        self.write_prefs();
    }
}

/// File → Open recent.
pub(super) fn recent_menu_ui(app: &App, ui: &mut egui::Ui, out: &mut Vec<AppCommand>) {
    let recent = app.recent();
    ui.add_enabled_ui(!recent.is_empty(), |ui| {
        ui.menu_button("Open recent", |ui| {
            for r in recent {
                let paths: Vec<String> = r.paths().iter().map(|p| p.display().to_string()).collect();
                if ui.button(r.label()).on_hover_text(paths.join("\n")).clicked() {
                    out.push(AppCommand::OpenRecent(r.clone()));
                    ui.close();
                }
            }
        });
    });
}
