//! `tandem annotations validate|export|import`, and building a document from the CLI's proposals.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::annotation::export::{self, ExportFormat};
use crate::annotation::{Document, ImageRef, io};
use crate::cli::CliError;
use crate::grounding::Proposal;

#[derive(Subcommand, Debug)]
pub enum AnnotationsCommand {
    /// Check that a document parses, is consistent and exports (exit 0, or 2 with `error: …`).
    Validate { file: PathBuf },
    /// Write a document as COCO JSON, MedSG-Bench JSON or DICOM SR.
    Export {
        file: PathBuf,
        #[arg(long, value_parser = ["coco", "medsg", "sr"])]
        format: String,
        #[arg(long)]
        out: PathBuf,
        /// Keep patient name, id and birth date, file names and UIDs in ML exports (COCO, MedSG).
        #[arg(long)]
        keep_phi: bool,
        /// Replace --out when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Read a DICOM SR (TID 1500: Tandem's, or another viewer's planar ROIs) into a document.
    Import {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The images the SR refers to (files or folders): referenced instances found there
        /// become those images, with their paths and sizes; others are kept by UID only.
        #[arg(long, num_args = 1..)]
        images: Vec<PathBuf>,
        /// Replace --out when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Saves the document again and again (for crash-safety tests); never returns.
    #[command(hide = true)]
    SaveLoop { file: PathBuf },
}

pub fn run(what: &AnnotationsCommand) -> Result<(), CliError> {
    match what {
        AnnotationsCommand::Validate { file } => {
            let doc = io::load(file).map_err(|e| CliError(format!("{e} ({})", file.display())))?;
            let problems = export::problems(&doc, None);
            if let Some(first) = problems.first() {
                let more = if problems.len() > 1 { format!(" (and {} more)", problems.len() - 1) } else { String::new() };
                return Err(CliError(format!("the document would not export: {first}{more} ({})", file.display())));
            }
            // An SR references DICOM instances; other images are fine for COCO and MedSG.
            let not_dicom: Vec<&str> = doc.images.iter().filter(|i| i.sop_instance_uid.is_none()).map(|i| i.id.as_str()).collect();
            let note =
                if not_dicom.is_empty() { String::new() } else { format!("; no DICOM SR export (not DICOM: {})", not_dicom.join(", ")) };
            println!("ok: {} image(s), {} finding(s), schema version {}{note}", doc.images.len(), doc.findings.len(), doc.schema_version);
            Ok(())
        }
        AnnotationsCommand::Export { file, format, out, keep_phi, force } => {
            let doc = io::load(file).map_err(|e| CliError(format!("{e} ({})", file.display())))?;
            let format = ExportFormat::parse(format).ok_or_else(|| CliError(format!("unknown format {format}")))?;
            // The document and the images it refers to are inputs an export must not replace.
            let images: Vec<PathBuf> = doc.images.iter().map(|i| PathBuf::from(&i.path)).collect();
            let mut inputs: Vec<&Path> = vec![file.as_path()];
            inputs.extend(images.iter().map(PathBuf::as_path));
            crate::fsutil::check_output(out, &inputs, *force).map_err(CliError)?;
            export::export(&doc, format, out, *keep_phi)?;
            println!("wrote {} ({})", out.display(), format.label());
            Ok(())
        }
        AnnotationsCommand::Import { file, out, images, force } => import(file, out, images, *force),
        AnnotationsCommand::SaveLoop { file } => save_loop(file),
    }
}

fn import(file: &Path, out: &Path, images: &[PathBuf], force: bool) -> Result<(), CliError> {
    let mut inputs: Vec<&Path> = vec![file];
    inputs.extend(images.iter().map(PathBuf::as_path));
    crate::fsutil::check_output(out, &inputs, force).map_err(CliError)?;
    let quiet = |_: f32, _: &str| {};
    let mut local = Vec::new();
    for p in images {
        let at = |e: crate::study::StudyError| CliError(format!("{e} ({})", p.display()));
        if p.is_dir() {
            // Every series of the folder: an SR may refer to several.
            for group in crate::study::series::scan_folder(p, &quiet).map_err(at)? {
                local.push(crate::study::series::load_group(&group, &quiet).map_err(at)?);
            }
        } else {
            local.push(crate::study::load(p, &quiet).map_err(at)?);
        }
    }
    let (doc, report) = crate::annotation::import::import_file(file, &local).map_err(|e| CliError(format!("{e} ({})", file.display())))?;
    for s in &report.skipped {
        eprintln!("note: left out {s}");
    }
    if report.images_unresolved > 0 {
        eprintln!("note: {} referenced image(s) not among --images: kept by UID only (no path or size)", report.images_unresolved);
    }
    io::save(&doc, out)?;
    println!("wrote {} ({} finding(s), {} box(es) on {} image(s))", out.display(), report.findings, report.boxes, doc.images.len());
    Ok(())
}

/// Saves versions 0, 1, 2, … of a document forever; each version's findings count is its number
/// modulo 50, so a reader can tell which version it sees.
fn save_loop(file: &Path) -> Result<(), CliError> {
    let now = crate::annotation::document::now();
    let mut doc = Document::new(vec![ImageRef {
        id: "current".into(),
        path: "x.png".into(),
        width: 100,
        height: 100,
        frames: 1,
        ..Default::default()
    }]);
    for version in 0u64.. {
        let n = (version % 50) as usize;
        doc.extra.insert("version".into(), serde_json::json!(version));
        doc.findings = (0..n)
            .map(|k| {
                let b = crate::grounding::BBox::new(k as f32, k as f32, k as f32 + 10.0, k as f32 + 10.0);
                let mut f = crate::annotation::Finding::new(
                    crate::annotation::FindingKind::Manual,
                    &format!("v{version}-{k}"),
                    vec![crate::annotation::ImageBox::new("current", 0, b)],
                    crate::annotation::Source::Human { user: None },
                    &now,
                );
                f.id = format!("f-{k}");
                f
            })
            .collect();
        io::save(&doc, file)?;
    }
    Ok(())
}

/// A document whose findings are the proposals of `ground diff`.
pub fn document_for(prior: &Path, current: &Path, proposals: &[Proposal]) -> Result<Document, CliError> {
    let quiet = |_: f32, _: &str| {};
    let mut images = Vec::new();
    for (id, path) in [("prior", prior), ("current", current)] {
        images.push(ImageRef::from_series(id, &crate::study::load(path, &quiet)?));
    }
    let mut doc = Document::new(images);
    doc.findings = findings_for(proposals);
    Ok(doc)
}

/// The proposals of `ground diff` as findings on the current image (references on the prior).
pub fn findings_for(proposals: &[Proposal]) -> Vec<crate::annotation::Finding> {
    let now = crate::annotation::document::now();
    Document::proposals_to_findings(proposals, ("current", 0), ("prior", 0), &now)
}
