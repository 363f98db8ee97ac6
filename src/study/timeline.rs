//! A patient's studies in time order: the folders scanned, their series grouped by study, the
//! studies ordered by study date and time, and in each the series to compare (the modality of the
//! latest study's largest series, most frames first).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::study::StudyError;
use crate::study::series::{LoadProgress, SeriesGroup, scan_folder, study_key, study_when};

/// The series of the folders `paths` as one list (a timeline may span several folders).
pub fn scan_folders(paths: &[PathBuf], progress: LoadProgress) -> Result<Vec<SeriesGroup>, StudyError> {
    let mut groups = Vec::new();
    let n = paths.len().max(1) as f32;
    for (k, p) in paths.iter().enumerate() {
        if !p.is_dir() {
            return Err(StudyError::Unsupported(format!("a timeline opens folders, and {} is not one", p.display())));
        }
        let report = |f: f32, msg: &str| progress((k as f32 + f) / n, msg);
        groups.extend(scan_folder(p, &report)?);
    }
    Ok(groups)
}

/// How many studies the series belong to.
pub fn study_count(groups: &[SeriesGroup]) -> usize {
    groups.iter().map(study_key).collect::<std::collections::BTreeSet<_>>().len()
}

/// One series per study, oldest study first: in the latest study its largest series, in the others
/// the largest of that series' modality (else the largest). Refused when the studies are of more
/// than one patient or fewer than two.
pub fn timepoints(groups: Vec<SeriesGroup>) -> Result<Vec<SeriesGroup>, StudyError> {
    let mut studies: BTreeMap<String, Vec<SeriesGroup>> = BTreeMap::new();
    for g in groups {
        studies.entry(study_key(&g)).or_default().push(g);
    }
    if studies.len() < 2 {
        return Err(StudyError::Empty(format!("a timeline needs two studies or more; found {}", studies.len())));
    }
    let patients: std::collections::BTreeSet<String> = studies
        .values()
        .filter_map(|v| v[0].meta.patient_id.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string))
        .collect();
    if patients.len() > 1 {
        return Err(StudyError::Unsupported(format!("the folders hold studies of {} different patients", patients.len())));
    }
    let mut ordered: Vec<(String, Vec<SeriesGroup>)> = studies.into_values().map(|v| (study_when(&v[0]), v)).collect();
    // Oldest first; studies of one date and time keep their UID order.
    ordered.sort_by(|a, b| a.0.cmp(&b.0));
    let latest =
        ordered.last().and_then(|(_, v)| v.iter().max_by_key(|g| g.frame_count())).map(|g| g.meta.modality.clone()).unwrap_or(None);
    Ok(ordered
        .into_iter()
        .filter_map(|(_, mut v)| {
            v.sort_by_key(|g| (g.meta.modality != latest, std::cmp::Reverse(g.frame_count())));
            v.into_iter().next()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::Meta;

    fn group(study: &str, date: &str, modality: &str, frames: usize, patient: &str) -> SeriesGroup {
        let meta = Meta {
            study_uid: Some(study.into()),
            study_date: Some(date.into()),
            modality: Some(modality.into()),
            patient_id: Some(patient.into()),
            series_uid: Some(format!("{study}.{modality}.{frames}")),
            ..Meta::default()
        };
        SeriesGroup {
            meta,
            files: vec![PathBuf::from(format!("{study}-{frames}"))],
            frames_per_file: vec![frames],
            raster: false,
            volume: false,
        }
    }

    #[test]
    fn studies_in_date_order_with_the_series_like_the_latest() {
        let groups = vec![
            group("1.3", "20250601", "CT", 40, "P"),
            group("1.1", "20240101", "MR", 90, "P"),
            group("1.1", "20240101", "CT", 30, "P"),
            group("1.2", "20241001", "CT", 35, "P"),
            group("1.3", "20250601", "CT", 10, "P"),
        ];
        assert_eq!(study_count(&groups), 3);
        let t = timepoints(groups).unwrap();
        let got: Vec<(&str, usize)> = t.iter().map(|g| (g.meta.study_date.as_deref().unwrap(), g.frame_count())).collect();
        assert_eq!(got, [("20240101", 30), ("20241001", 35), ("20250601", 40)]);
        let two_patients = vec![group("1.1", "20240101", "CT", 3, "P"), group("1.2", "20250101", "CT", 3, "Q")];
        assert!(timepoints(two_patients).unwrap_err().to_string().contains("2 different patients"));
        assert!(timepoints(vec![group("1.1", "20240101", "CT", 3, "P")]).is_err());
    }
}
