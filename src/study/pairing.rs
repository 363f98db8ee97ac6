//! Whether two studies belong side by side: same patient, prior not newer than current, same modality.

use crate::study::Meta;

/// Something about a hung pair that a reader must see before comparing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairingIssue {
    PatientId {
        prior: String,
        current: String,
    },
    PatientName {
        prior: String,
        current: String,
    },
    /// The current study was acquired before the prior (dates as YYYY-MM-DD).
    CurrentOlder {
        prior: String,
        current: String,
    },
    Modality {
        prior: String,
        current: String,
    },
}

impl PairingIssue {
    /// One line for the warning banner; identifiers last, as the style guide asks of messages.
    pub fn describe(&self) -> String {
        match self {
            PairingIssue::PatientId { prior, current } => format!("different patient ID: prior {prior}, current {current}"),
            PairingIssue::PatientName { prior, current } => format!("different patient name: prior {prior}, current {current}"),
            PairingIssue::CurrentOlder { prior, current } => {
                format!("the current study ({current}) is older than the prior ({prior})")
            }
            PairingIssue::Modality { prior, current } => format!("different modality: prior {prior}, current {current}"),
        }
    }

    /// The two images are of different people: nothing computed between them means anything.
    pub fn is_other_patient(&self) -> bool {
        matches!(self, PairingIssue::PatientId { .. } | PairingIssue::PatientName { .. })
    }
}

/// What differs between a prior and a current study. An attribute missing on either side is not
/// reported: PNGs and anonymized files carry none, and a warning on every such pair would teach
/// readers to ignore the banner.
pub fn check(prior: &Meta, current: &Meta) -> Vec<PairingIssue> {
    let mut issues = Vec::new();
    let id = |m: &Meta| m.patient_id.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    if let (Some(p), Some(c)) = (id(prior), id(current))
        && p != c
    {
        issues.push(PairingIssue::PatientId { prior: p, current: c });
    }
    let name = |m: &Meta| m.patient_name.as_deref().and_then(normalized_name).map(|n| (n, m.patient_name.clone().unwrap_or_default()));
    if let (Some((pn, p)), Some((cn, c))) = (name(prior), name(current))
        && pn != cn
    {
        issues.push(PairingIssue::PatientName { prior: p.trim().to_string(), current: c.trim().to_string() });
    }
    let date = |m: &Meta| m.study_date.as_deref().and_then(normalized_date);
    if let (Some(p), Some(c)) = (date(prior), date(current))
        && c < p
    {
        issues.push(PairingIssue::CurrentOlder { prior: pretty(&p), current: pretty(&c) });
    }
    let modality = |m: &Meta| m.modality.as_deref().map(|s| s.trim().to_ascii_uppercase()).filter(|s| !s.is_empty());
    if let (Some(p), Some(c)) = (modality(prior), modality(current))
        && p != c
    {
        issues.push(PairingIssue::Modality { prior: p, current: c });
    }
    issues
}

/// A Person Name compared the way a reader would: the alphabetic group only, components trimmed,
/// trailing empty components dropped ("DOE^JOHN^^" is "DOE^JOHN"), case ignored. `None` when empty.
fn normalized_name(pn: &str) -> Option<String> {
    let alphabetic = pn.split('=').next().unwrap_or("");
    let mut parts: Vec<String> = alphabetic.split('^').map(|p| p.trim().to_uppercase()).collect();
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    (!parts.is_empty()).then(|| parts.join("^"))
}

/// "YYYYMMDD" from a DA value, also the old "YYYY.MM.DD" form; `None` unless eight digits remain.
fn normalized_date(da: &str) -> Option<String> {
    let digits: String = da.trim().chars().filter(char::is_ascii_digit).collect();
    (digits.len() == 8).then_some(digits)
}

fn pretty(d: &str) -> String {
    format!("{}-{}-{}", &d[0..4], &d[4..6], &d[6..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, name: &str, date: &str, modality: &str) -> Meta {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Meta { patient_id: some(id), patient_name: some(name), study_date: some(date), modality: some(modality), ..Meta::default() }
    }

    #[test]
    fn same_patient_in_order_is_fine() {
        let prior = meta("4MR1", "CompressedSamples^MR1", "20030101", "MR");
        let current = meta("4MR1", "compressedsamples^mr1^^", "2004.08.26", "mr");
        assert_eq!(check(&prior, &current), vec![]);
        // The same study on both sides is not "older".
        assert_eq!(check(&prior, &prior), vec![]);
    }

    #[test]
    fn every_difference_is_named() {
        let prior = meta("4MR1", "CompressedSamples^MR1", "20040826", "MR");
        let current = meta("1CT1", "CompressedSamples^CT1", "20040119", "CT");
        let issues = check(&prior, &current);
        assert_eq!(
            issues,
            vec![
                PairingIssue::PatientId { prior: "4MR1".into(), current: "1CT1".into() },
                PairingIssue::PatientName { prior: "CompressedSamples^MR1".into(), current: "CompressedSamples^CT1".into() },
                PairingIssue::CurrentOlder { prior: "2004-08-26".into(), current: "2004-01-19".into() },
                PairingIssue::Modality { prior: "MR".into(), current: "CT".into() },
            ]
        );
        assert!(issues[0].is_other_patient() && issues[1].is_other_patient());
        assert!(!issues[2].is_other_patient() && !issues[3].is_other_patient());
        assert_eq!(issues[2].describe(), "the current study (2004-01-19) is older than the prior (2004-08-26)");
        assert_eq!(issues[0].describe(), "different patient ID: prior 4MR1, current 1CT1");
    }

    #[test]
    fn a_name_alone_can_differ() {
        let issues = check(&meta("77", "DOE^JOHN", "", ""), &meta("77", "ROE^JANE", "", ""));
        assert_eq!(issues, vec![PairingIssue::PatientName { prior: "DOE^JOHN".into(), current: "ROE^JANE".into() }]);
    }

    #[test]
    fn missing_or_unreadable_values_are_not_reported() {
        // PNGs and anonymized files: nothing known, nothing claimed.
        assert_eq!(check(&Meta::default(), &meta("1CT1", "CompressedSamples^CT1", "20040119", "CT")), vec![]);
        assert_eq!(check(&meta(" ", "^^", "2004", " "), &meta("1CT1", "A^B", "20040119", "CT")), vec![]);
    }

    #[test]
    fn dicom_files_of_two_patients() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dicom");
        let load = |f: &str| crate::study::load(&dir.join(f), &|_, _| {}).expect(f).meta.as_ref().clone();
        let (mr, ct) = (load("MR_small.dcm"), load("CT_small.dcm"));
        let issues = check(&mr, &ct);
        assert!(issues.iter().any(PairingIssue::is_other_patient), "{issues:?}");
        assert!(issues.iter().any(|i| matches!(i, PairingIssue::CurrentOlder { .. })), "{issues:?}");
        assert_eq!(check(&mr, &load("MR_small_RLE.dcm")), vec![]);
    }
}
