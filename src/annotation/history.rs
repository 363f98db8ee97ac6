//! Undo/redo: every change to a document is an invertible command, so any sequence of adds,
//! moves, resizes, relabels, accepts, rejects, deletes and model runs can be undone.

use crate::annotation::document::{Document, Finding};

/// One undoable change.
// A history holds a few hundred commands at most; boxing the findings would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Findings appended at the end (a manual box, or a model run's proposals).
    Add { findings: Vec<Finding>, description: String },
    /// A finding removed from `index`.
    Remove { index: usize, finding: Finding },
    /// A finding replaced (move, resize, relabel, accept, reject): both states kept whole.
    Replace { before: Finding, after: Finding, description: String },
    /// Several commands that the user made as one action (a bulk accept or reject): one undo step.
    Group { commands: Vec<Command>, description: String },
}

impl Command {
    pub fn description(&self) -> String {
        match self {
            Command::Add { description, .. } | Command::Replace { description, .. } | Command::Group { description, .. } => {
                description.clone()
            }
            Command::Remove { finding, .. } => format!("delete {}", finding.label),
        }
    }

    fn apply(&self, doc: &mut Document) {
        match self {
            Command::Add { findings, .. } => doc.findings.extend(findings.iter().cloned()),
            Command::Remove { index, finding } => {
                if doc.findings.get(*index).is_some_and(|f| f.id == finding.id) {
                    doc.findings.remove(*index);
                } else if let Some(i) = doc.index_of(&finding.id) {
                    doc.findings.remove(i);
                }
            }
            Command::Replace { after, .. } => {
                if let Some(i) = doc.index_of(&after.id) {
                    doc.findings[i] = after.clone();
                }
            }
            Command::Group { commands, .. } => commands.iter().for_each(|c| c.apply(doc)),
        }
    }

    fn revert(&self, doc: &mut Document) {
        match self {
            Command::Add { findings, .. } => {
                let ids: Vec<&str> = findings.iter().map(|f| f.id.as_str()).collect();
                doc.findings.retain(|f| !ids.contains(&f.id.as_str()));
            }
            Command::Remove { index, finding } => {
                let at = (*index).min(doc.findings.len());
                doc.findings.insert(at, finding.clone());
            }
            Command::Replace { before, .. } => {
                if let Some(i) = doc.index_of(&before.id) {
                    doc.findings[i] = before.clone();
                }
            }
            Command::Group { commands, .. } => commands.iter().rev().for_each(|c| c.revert(doc)),
        }
    }
}

/// The document a user edits, with its undo and redo stacks and a dirty flag.
#[derive(Clone, Debug, Default)]
pub struct History {
    undo: Vec<Command>,
    redo: Vec<Command>,
    /// Number of commands applied since the last save (negative after undoing past it).
    changes_since_save: i64,
    /// True when the saved state can no longer be reached by undo/redo.
    diverged: bool,
}

impl History {
    pub fn apply(&mut self, doc: &mut Document, command: Command) {
        command.apply(doc);
        self.undo.push(command);
        if self.changes_since_save < 0 {
            // The saved state was on the redo stack, which this command discards.
            self.diverged = true;
        }
        self.redo.clear();
        self.changes_since_save += 1;
    }

    /// Undoes the last command; returns its description.
    pub fn undo(&mut self, doc: &mut Document) -> Option<String> {
        let c = self.undo.pop()?;
        c.revert(doc);
        let d = c.description();
        self.redo.push(c);
        self.changes_since_save -= 1;
        Some(d)
    }

    pub fn redo(&mut self, doc: &mut Document) -> Option<String> {
        let c = self.redo.pop()?;
        c.apply(doc);
        let d = c.description();
        self.undo.push(c);
        self.changes_since_save += 1;
        Some(d)
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    pub fn is_dirty(&self) -> bool {
        self.diverged || self.changes_since_save != 0
    }

    pub fn mark_saved(&mut self) {
        self.changes_since_save = 0;
        self.diverged = false;
    }

    /// The document differs from what is on disk without an undoable step (e.g. recovered).
    pub fn mark_unsaved(&mut self) {
        self.diverged = true;
    }

    /// Forgets everything (a new document was opened).
    pub fn reset(&mut self) {
        *self = History::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotation::document::{FindingKind, ImageBox, Source, Status};
    use crate::grounding::BBox;

    fn finding(label: &str) -> Finding {
        Finding::new(
            FindingKind::Manual,
            label,
            vec![ImageBox::new("current", 0, BBox::new(1.0, 2.0, 3.0, 4.0))],
            Source::Human { user: None },
            "t0",
        )
    }

    #[test]
    fn undo_and_redo_restore_exact_states() {
        let mut doc = Document::default();
        let mut h = History::default();
        let a = finding("a");
        h.apply(&mut doc, Command::Add { findings: vec![a.clone()], description: "add".into() });
        let s1 = doc.clone();
        let mut b = a.clone();
        b.status = Status::Rejected;
        b.touch("t1", "reject", None);
        h.apply(&mut doc, Command::Replace { before: a.clone(), after: b, description: "reject".into() });
        let s2 = doc.clone();
        h.apply(&mut doc, Command::Remove { index: 0, finding: s2.findings[0].clone() });
        assert!(doc.findings.is_empty());
        h.undo(&mut doc);
        assert_eq!(doc, s2);
        h.undo(&mut doc);
        assert_eq!(doc, s1);
        h.redo(&mut doc);
        assert_eq!(doc, s2);
        assert!(h.is_dirty());
    }

    #[test]
    fn a_group_is_one_step() {
        let mut doc = Document::default();
        let mut h = History::default();
        h.apply(&mut doc, Command::Add { findings: vec![finding("a"), finding("b")], description: "add".into() });
        let before = doc.clone();
        let commands = before
            .findings
            .iter()
            .map(|f| {
                let mut after = f.clone();
                after.status = Status::Accepted;
                Command::Replace { before: f.clone(), after, description: "accept".into() }
            })
            .collect();
        h.apply(&mut doc, Command::Group { commands, description: "accept 2".into() });
        assert!(doc.findings.iter().all(|f| f.status == Status::Accepted));
        assert_eq!(h.undo(&mut doc).as_deref(), Some("accept 2"));
        assert_eq!(doc, before);
        h.redo(&mut doc);
        assert!(doc.findings.iter().all(|f| f.status == Status::Accepted));
    }

    #[test]
    fn dirty_tracks_the_saved_state() {
        let mut doc = Document::default();
        let mut h = History::default();
        h.apply(&mut doc, Command::Add { findings: vec![finding("a")], description: "add".into() });
        h.mark_saved();
        assert!(!h.is_dirty());
        h.undo(&mut doc);
        assert!(h.is_dirty());
        h.redo(&mut doc);
        assert!(!h.is_dirty());
        h.undo(&mut doc);
        h.apply(&mut doc, Command::Add { findings: vec![finding("b")], description: "add".into() });
        h.undo(&mut doc);
        // The saved state (with "a") is gone from both stacks: still dirty.
        assert!(h.is_dirty());
    }
}
