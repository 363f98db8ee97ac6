//! `tandem pacs search|get|push`: the DICOMweb client from the command line. Credentials come
//! from the environment (see `pacs::Auth::from_env`), never from arguments.

use std::path::PathBuf;

use clap::Subcommand;

use crate::cli::CliError;
use crate::pacs::{Client, Query};

#[derive(Subcommand, Debug)]
pub enum PacsCommand {
    /// Studies on the PACS (QIDO-RS), newest first: date, modalities, series, description.
    Search {
        /// The DICOMweb root, e.g. http://localhost:8042/dicom-web (Orthanc).
        url: String,
        #[arg(long)]
        patient: Option<String>,
        /// Patient name, with DICOM wildcards (* and ?).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        modality: Option<String>,
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Retrieve a study (or one series) into DIR/STUDY_UID/SERIES_UID/ (WADO-RS); instances
    /// already there and valid are kept, so an interrupted retrieval resumes.
    Get {
        url: String,
        study: String,
        #[arg(long)]
        series: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Store DICOM files (an exported SR, images) on the PACS (STOW-RS).
    Push {
        url: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(what: &PacsCommand) -> Result<(), CliError> {
    match what {
        PacsCommand::Search { url, patient, name, modality, json } => {
            let client = Client::from_env(url)?;
            let query = Query { patient_id: patient.clone(), patient_name: name.clone(), modality: modality.clone() };
            let studies = client.search(&query)?;
            if *json {
                println!("{}", serde_json::to_string(&studies)?);
                return Ok(());
            }
            if studies.is_empty() {
                println!("no studies");
            }
            for s in &studies {
                println!(
                    "{}  {:<8}  {:>3} series  {:<32}  {}  {}",
                    s.date.as_deref().map(pretty_date).unwrap_or_else(|| "(no date)".into()),
                    s.modalities.join("/"),
                    s.series_count.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                    s.description.as_deref().unwrap_or("(no description)"),
                    s.patient_id.as_deref().unwrap_or("-"),
                    s.study_uid
                );
            }
            Ok(())
        }
        PacsCommand::Get { url, study, series, out } => {
            let client = Client::from_env(url)?;
            if out.exists() && !out.is_dir() {
                return Err(CliError(format!("--out must be a folder ({})", out.display())));
            }
            let mut progress = crate::cli::progress::Progress::new("retrieving instances");
            let r = client.retrieve(study, series.as_deref(), out, &mut |d, t| progress.update(d, t))?;
            println!("{} instance(s) in {} ({} retrieved, {} already there)", r.files.len(), r.folder.display(), r.fetched, r.kept);
            Ok(())
        }
        PacsCommand::Push { url, files } => {
            let client = Client::from_env(url)?;
            let mut bodies = Vec::new();
            // Every file is checked before anything is sent.
            for f in files {
                let bytes = std::fs::read(f).map_err(|e| CliError(format!("cannot read: {e} ({})", f.display())))?;
                if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
                    return Err(CliError(format!("not a DICOM file (no DICM at byte 128) ({})", f.display())));
                }
                bodies.push(bytes);
            }
            let r = client.store(&bodies)?;
            if !r.failed.is_empty() {
                let list: Vec<String> = r
                    .failed
                    .iter()
                    .map(|(uid, why)| format!("{uid} (reason {})", why.map(|w| format!("0x{w:04X}")).unwrap_or_else(|| "?".into())))
                    .collect();
                return Err(CliError(format!("the PACS refused {} of {} instance(s): {}", r.failed.len(), bodies.len(), list.join(", "))));
            }
            if r.stored.len() == bodies.len() {
                println!("stored {} instance(s) on {}", bodies.len(), client.base());
            } else {
                println!("sent {} instance(s) to {}; it confirmed {}", bodies.len(), client.base(), r.stored.len());
            }
            Ok(())
        }
    }
}

/// 20240131 → 2024-01-31 (other text as it is).
fn pretty_date(d: &str) -> String {
    if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) { format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]) } else { d.to_string() }
}

/// Modalities that are documents about images, not images to hang.
fn is_image_modality(m: &str) -> bool {
    !matches!(m, "SR" | "KO" | "PR" | "DOC" | "REG" | "SEG" | "RTSTRUCT" | "RTPLAN" | "RTDOSE")
}

/// From a patient's studies (newest first): the current study (the latest with images) and the
/// prior (the latest earlier study sharing one of its image modalities).
pub fn hang(studies: &[crate::pacs::Study]) -> Result<(&crate::pacs::Study, &crate::pacs::Study), String> {
    let images = |s: &crate::pacs::Study| s.modalities.iter().filter(|m| is_image_modality(m)).cloned().collect::<Vec<_>>();
    let k = studies.iter().position(|s| !images(s).is_empty()).ok_or("the patient has no study with images on the PACS")?;
    let current = &studies[k];
    let wanted = images(current);
    let prior = studies[k + 1..]
        .iter()
        .find(|s| images(s).iter().any(|m| wanted.contains(m)))
        .ok_or_else(|| format!("no earlier study of the patient with {} to compare with", wanted.join("/")))?;
    Ok((prior, current))
}

/// The default cache: `$XDG_CACHE_HOME/tandem/pacs`, else `~/.cache/tandem/pacs`.
pub fn default_cache() -> Result<PathBuf, CliError> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| CliError("no cache folder: set XDG_CACHE_HOME or pass --cache".into()))?;
    Ok(base.join("tandem").join("pacs"))
}

/// For `tandem view --pacs URL --patient ID` (credentials from the environment, cache by
/// default under ~/.cache): finds the patient's current and prior studies,
/// retrieves the image series of each (the one with most instances) into the cache, and returns
/// the two series folders (prior, current).
pub fn open_pair(url: &str, patient: &str, cache: Option<&std::path::Path>) -> Result<(PathBuf, PathBuf), CliError> {
    let client = Client::from_env(url)?;
    let cache = match cache {
        Some(c) => c.to_path_buf(),
        None => default_cache()?,
    };
    fetch_pair(&client, patient, &cache)
}

/// `open_pair` with a given client and cache folder.
pub fn fetch_pair(client: &Client, patient: &str, cache: &std::path::Path) -> Result<(PathBuf, PathBuf), CliError> {
    let studies = client.search(&Query { patient_id: Some(patient.to_string()), ..Query::default() })?;
    let (prior, current) = hang(&studies).map_err(CliError)?;
    let mut folders = Vec::new();
    for study in [prior, current] {
        let series = client
            .series(&study.study_uid)?
            .into_iter()
            .filter(|s| s.modality.as_deref().is_none_or(is_image_modality))
            .max_by_key(|s| s.instance_count.unwrap_or(0))
            .ok_or_else(|| CliError(format!("study {} has no image series", study.study_uid)))?;
        eprintln!(
            "{} study of {}: {} ({})",
            if std::ptr::eq(study, current) { "current" } else { "prior" },
            study.date.as_deref().map(pretty_date).unwrap_or_else(|| "no date".into()),
            study.description.as_deref().unwrap_or("no description"),
            series.modality.as_deref().unwrap_or("?")
        );
        let mut progress = crate::cli::progress::Progress::new("retrieving instances");
        let r = client.retrieve(&study.study_uid, Some(&series.series_uid), cache, &mut |d, t| progress.update(d, t))?;
        folders.push(r.folder.join(&series.series_uid));
    }
    let current_folder = folders.pop().unwrap_or_default();
    let prior_folder = folders.pop().unwrap_or_default();
    Ok((prior_folder, current_folder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacs::Study;

    fn study(uid: &str, date: &str, modalities: &[&str]) -> Study {
        Study {
            study_uid: uid.into(),
            date: Some(date.into()),
            modalities: modalities.iter().map(|m| m.to_string()).collect(),
            ..Study::default()
        }
    }

    #[test]
    fn the_latest_image_study_is_current_and_the_latest_comparable_one_prior() {
        let studies = [
            study("1.5", "20250301", &["SR"]),
            study("1.4", "20250201", &["MR", "SR"]),
            study("1.3", "20250101", &["CT"]),
            study("1.2", "20240101", &["MR"]),
            study("1.1", "20230101", &["MR"]),
        ];
        let (prior, current) = hang(&studies).unwrap();
        assert_eq!((prior.study_uid.as_str(), current.study_uid.as_str()), ("1.2", "1.4"));
        assert!(hang(&studies[..3]).unwrap_err().contains("MR"));
        assert!(hang(&studies[..1]).is_err());
        assert!(hang(&[]).is_err());
    }
}
