//! The DICOM JSON model (PS3.18 F.2) of QIDO-RS and STOW-RS answers, read into the few
//! attributes Tandem lists.

use serde::Serialize;
use serde_json::Value;

/// A study as QIDO-RS lists it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Study {
    pub study_uid: String,
    pub date: Option<String>,
    pub time: Option<String>,
    pub description: Option<String>,
    pub modalities: Vec<String>,
    pub series_count: Option<u32>,
    pub instance_count: Option<u32>,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub accession: Option<String>,
}

/// A series of a study.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    pub series_uid: String,
    pub modality: Option<String>,
    pub number: Option<i64>,
    pub description: Option<String>,
    pub instance_count: Option<u32>,
}

/// What a STOW-RS answer says was stored and what failed (SOP Instance UIDs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreResult {
    pub stored: Vec<String>,
    pub failed: Vec<(String, Option<u16>)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JsonError {
    #[error("the answer is not valid JSON: {0}")]
    Syntax(String),
    #[error("the answer is not DICOM JSON: {0}")]
    Shape(String),
}

fn parse_array(bytes: &[u8]) -> Result<Vec<serde_json::Map<String, Value>>, JsonError> {
    // An empty body is an empty result (some servers answer 204 with nothing).
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| JsonError::Syntax(e.to_string()))?;
    let Value::Array(items) = v else { return Err(JsonError::Shape("expected an array of data sets".into())) };
    items
        .into_iter()
        .enumerate()
        .map(|(k, i)| match i {
            Value::Object(m) => Ok(m),
            _ => Err(JsonError::Shape(format!("item {k} is not an object"))),
        })
        .collect()
}

/// The values of attribute `tag` (8 hex digits) as text: strings, numbers, and person names'
/// alphabetic form.
fn values(ds: &serde_json::Map<String, Value>, tag: &str) -> Vec<String> {
    let Some(Value::Array(vs)) = ds.get(tag).and_then(|a| a.get("Value")) else { return Vec::new() };
    vs.iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Object(o) => o.get("Alphabetic").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
        .collect()
}

fn first(ds: &serde_json::Map<String, Value>, tag: &str) -> Option<String> {
    values(ds, tag).into_iter().next().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn count(ds: &serde_json::Map<String, Value>, tag: &str) -> Option<u32> {
    first(ds, tag).and_then(|s| s.parse().ok())
}

fn uid(ds: &serde_json::Map<String, Value>, tag: &str, k: usize) -> Result<String, JsonError> {
    let u = first(ds, tag).ok_or_else(|| JsonError::Shape(format!("item {k} has no UID ({tag})")))?;
    // UIDs become folder and file names in the cache: only a well-formed one is taken.
    if crate::annotation::document::is_valid_uid(&u) { Ok(u) } else { Err(JsonError::Shape(format!("item {k} has a malformed UID {u:?}"))) }
}

pub fn studies(bytes: &[u8]) -> Result<Vec<Study>, JsonError> {
    parse_array(bytes)?
        .iter()
        .enumerate()
        .map(|(k, ds)| {
            Ok(Study {
                study_uid: uid(ds, "0020000D", k)?,
                date: first(ds, "00080020"),
                time: first(ds, "00080030"),
                description: first(ds, "00081030"),
                modalities: values(ds, "00080061"),
                series_count: count(ds, "00201206"),
                instance_count: count(ds, "00201208"),
                patient_id: first(ds, "00100020"),
                patient_name: first(ds, "00100010"),
                accession: first(ds, "00080050"),
            })
        })
        .collect()
}

pub fn series(bytes: &[u8]) -> Result<Vec<Series>, JsonError> {
    parse_array(bytes)?
        .iter()
        .enumerate()
        .map(|(k, ds)| {
            Ok(Series {
                series_uid: uid(ds, "0020000E", k)?,
                modality: first(ds, "00080060"),
                number: first(ds, "00200011").and_then(|s| s.parse().ok()),
                description: first(ds, "0008103E"),
                instance_count: count(ds, "00201209"),
            })
        })
        .collect()
}

/// SOP Instance UIDs of a QIDO-RS instance listing.
pub fn instances(bytes: &[u8]) -> Result<Vec<String>, JsonError> {
    parse_array(bytes)?.iter().enumerate().map(|(k, ds)| uid(ds, "00080018", k)).collect()
}

/// A STOW-RS answer: one data set with ReferencedSOPSequence (stored) and FailedSOPSequence.
pub fn store_result(bytes: &[u8]) -> Result<StoreResult, JsonError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(StoreResult::default());
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| JsonError::Syntax(e.to_string()))?;
    // Some servers wrap the data set in an array.
    let ds = match &v {
        Value::Array(a) if a.len() == 1 => a[0].as_object(),
        Value::Object(o) => Some(o),
        _ => None,
    }
    .ok_or_else(|| JsonError::Shape("expected one data set".into()))?;
    let items = |tag: &str| -> Vec<serde_json::Map<String, Value>> {
        match ds.get(tag).and_then(|a| a.get("Value")) {
            Some(Value::Array(a)) => a.iter().filter_map(|i| i.as_object().cloned()).collect(),
            _ => Vec::new(),
        }
    };
    Ok(StoreResult {
        stored: items("00081199").iter().filter_map(|i| first(i, "00081155")).collect(),
        failed: items("00081198")
            .iter()
            .map(|i| (first(i, "00081155").unwrap_or_default(), first(i, "00081197").and_then(|r| r.parse().ok())))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn studies_as_orthanc_lists_them() {
        let body = br#"[{"00080020":{"vr":"DA","Value":["20040826"]},"00080061":{"vr":"CS","Value":["MR","SR"]},
            "00081030":{"vr":"LO","Value":["Knee"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"CompressedSamples^MR1"}]},
            "0020000D":{"vr":"UI","Value":["1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"]},"00201206":{"vr":"IS","Value":[2]},
            "00080050":{"vr":"SH"}}]"#;
        let s = studies(body).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].date.as_deref(), Some("20040826"));
        assert_eq!(s[0].modalities, ["MR", "SR"]);
        assert_eq!(s[0].series_count, Some(2));
        assert_eq!(s[0].patient_name.as_deref(), Some("CompressedSamples^MR1"));
        assert_eq!(s[0].accession, None);
        assert_eq!(studies(b"").unwrap(), Vec::new());
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(matches!(studies(b"[{\"0020000D\":"), Err(JsonError::Syntax(_))));
        assert!(matches!(studies(b"{\"a\":1}"), Err(JsonError::Shape(_))));
        assert!(matches!(studies(b"[{}]"), Err(JsonError::Shape(_))));
        // A UID that would climb out of the cache folder.
        assert!(matches!(instances(br#"[{"00080018":{"vr":"UI","Value":["../../etc"]}}]"#), Err(JsonError::Shape(_))));
    }

    #[test]
    fn store_results_name_stored_and_failed() {
        let body = br#"{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3"]}}]},
            "00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.4"]},"00081197":{"vr":"US","Value":[272]}}]}}"#;
        let r = store_result(body).unwrap();
        assert_eq!(r.stored, ["1.2.3"]);
        assert_eq!(r.failed, [("1.2.4".to_string(), Some(272))]);
    }
}
