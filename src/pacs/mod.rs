//! DICOMweb client for a PACS: QIDO-RS search, WADO-RS retrieval into a local cache (atomic,
//! resumable, verified files) and STOW-RS storage; blocking HTTP over rustls, no async runtime.
//!
//! Credentials come from the environment only (`Auth::from_env`), never from the command line,
//! and no message or log line carries them.

pub mod json;
pub mod multipart;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use json::{Series, StoreResult, Study};

/// How a request proves who sends it.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    // Secrets never reach a log, a panic message or an error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => write!(f, "no authentication"),
            Auth::Basic { user, .. } => write!(f, "HTTP basic as {user}"),
            Auth::Bearer(_) => write!(f, "bearer token"),
        }
    }
}

/// The environment variables `Auth::from_env` reads.
pub const ENV_TOKEN: &str = "TANDEM_PACS_TOKEN";
pub const ENV_TOKEN_FILE: &str = "TANDEM_PACS_TOKEN_FILE";
pub const ENV_USER: &str = "TANDEM_PACS_USER";
pub const ENV_PASSWORD: &str = "TANDEM_PACS_PASSWORD";
pub const ENV_PASSWORD_FILE: &str = "TANDEM_PACS_PASSWORD_FILE";
pub const ENV_TIMEOUT: &str = "TANDEM_PACS_TIMEOUT_SECS";

impl Auth {
    /// A bearer token from `TANDEM_PACS_TOKEN` or the file `TANDEM_PACS_TOKEN_FILE` names; else
    /// HTTP basic from `TANDEM_PACS_USER` with `TANDEM_PACS_PASSWORD` or the file
    /// `TANDEM_PACS_PASSWORD_FILE` names; else none.
    pub fn from_env() -> Result<Auth, PacsError> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Auth, PacsError> {
        let read = |var_name: &str, path: String| {
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| PacsError::Config(format!("cannot read the file {var_name} names: {e} ({path})")))
        };
        let token = match (var(ENV_TOKEN), var(ENV_TOKEN_FILE)) {
            (Some(t), _) => Some(t),
            (None, Some(p)) => Some(read(ENV_TOKEN_FILE, p)?),
            (None, None) => None,
        };
        if let Some(t) = token {
            if t.is_empty() || t.chars().any(|c| c.is_control() || c == ' ') {
                return Err(PacsError::Config(format!("the bearer token ({ENV_TOKEN} or {ENV_TOKEN_FILE}) is empty or not one word")));
            }
            return Ok(Auth::Bearer(t));
        }
        match var(ENV_USER) {
            Some(user) => {
                let password = match (var(ENV_PASSWORD), var(ENV_PASSWORD_FILE)) {
                    (Some(p), _) => p,
                    (None, Some(path)) => read(ENV_PASSWORD_FILE, path)?,
                    (None, None) => String::new(),
                };
                Ok(Auth::Basic { user, password })
            }
            None => Ok(Auth::None),
        }
    }

    fn header(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::Basic { user, password } => Some(format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))),
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum PacsError {
    #[error("{0}")]
    Config(String),
    #[error("the PACS refused the credentials (HTTP 401): set {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN} ({0})")]
    Unauthorized(String),
    #[error("the PACS does not allow this (HTTP 403) ({0})")]
    Forbidden(String),
    #[error("not found on the PACS (HTTP 404) ({0})")]
    NotFound(String),
    #[error("nothing to retrieve: {0}")]
    Empty(String),
    #[error("the PACS answered HTTP {status}{detail} ({url})")]
    Status { status: u16, detail: String, url: String },
    #[error("the PACS did not answer within {secs} s ({url})")]
    Timeout { secs: u64, url: String },
    #[error("no PACS listens there: connection refused ({0})")]
    Refused(String),
    #[error("cannot reach the PACS: {msg} ({url})")]
    Network { msg: String, url: String },
    #[error("the PACS's answer was cut short ({0})")]
    CutShort(String),
    #[error("the PACS's answer is malformed: {msg} ({url})")]
    Malformed { msg: String, url: String },
    #[error("{msg} ({path})")]
    Local { msg: String, path: String },
}

/// A DICOMweb service at a base URL (Orthanc: `http://host:8042/dicom-web`).
pub struct Client {
    base: String,
    auth: Auth,
    agent: ureq::Agent,
    timeout: Duration,
}

/// The most one answer may hold (a large multi-frame instance is a few hundred MB).
const MAX_ANSWER_BYTES: u64 = 4 << 30;

impl Client {
    /// A client of `base` with `auth`; requests give up after `timeout` without progress.
    pub fn new(base: &str, auth: Auth, timeout: Duration) -> Result<Client, PacsError> {
        let base = base.trim_end_matches('/').to_string();
        let Some((scheme, rest)) = base.split_once("://") else {
            return Err(PacsError::Config(format!("the PACS URL must start with http:// or https:// ({base})")));
        };
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return Err(PacsError::Config(format!("the PACS URL must start with http:// or https:// ({base})")));
        }
        // Credentials in a URL end up in shell history and process lists.
        if rest.split('/').next().is_some_and(|host| host.contains('@')) {
            return Err(PacsError::Config(format!("put credentials in {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}, not in the URL")));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout.min(Duration::from_secs(15))))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(timeout))
            .user_agent(format!("tandem/{}", env!("CARGO_PKG_VERSION")))
            // The system's roots: a PACS is often behind the hospital's own CA.
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build())
            .build();
        Ok(Client { base, auth, agent: config.into(), timeout })
    }

    /// `new` with the credentials of the environment and its timeout (`TANDEM_PACS_TIMEOUT_SECS`,
    /// 30 s by default).
    pub fn from_env(base: &str) -> Result<Client, PacsError> {
        let secs = match std::env::var(ENV_TIMEOUT) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| PacsError::Config(format!("{ENV_TIMEOUT} must be a whole number of seconds")))?,
            Err(_) => 30,
        };
        Client::new(base, Auth::from_env()?, Duration::from_secs(secs))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn transport_error(&self, e: ureq::Error, url: &str) -> PacsError {
        match e {
            ureq::Error::Timeout(_) => PacsError::Timeout { secs: self.timeout.as_secs(), url: url.into() },
            ureq::Error::Io(io) => self.io_error(io, url),
            ureq::Error::ConnectionFailed => PacsError::Refused(url.into()),
            ureq::Error::HostNotFound => PacsError::Network { msg: "host not found".into(), url: url.into() },
            other => PacsError::Network { msg: other.to_string(), url: url.into() },
        }
    }

    fn io_error(&self, io: std::io::Error, url: &str) -> PacsError {
        use std::io::ErrorKind as K;
        match io.kind() {
            K::ConnectionRefused => PacsError::Refused(url.into()),
            K::TimedOut | K::WouldBlock => PacsError::Timeout { secs: self.timeout.as_secs(), url: url.into() },
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => PacsError::CutShort(url.into()),
            _ => {
                // ureq wraps its own errors (a timeout while reading the body) in io::Error.
                match io.into_inner().map(|inner| inner.downcast::<ureq::Error>()) {
                    Some(Ok(e)) => self.transport_error(*e, url),
                    Some(Err(other)) => PacsError::Network { msg: other.to_string(), url: url.into() },
                    None => PacsError::Network { msg: "input/output error".into(), url: url.into() },
                }
            }
        }
    }

    /// Status, Content-Type and the whole body of an answer; HTTP errors become `PacsError`s.
    fn finish(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>, url: &str) -> Result<(String, Vec<u8>), PacsError> {
        let r = r.map_err(|e| self.transport_error(e, url))?;
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let mut body = Vec::new();
        let read = r.into_body().into_reader().take(MAX_ANSWER_BYTES).read_to_end(&mut body);
        match status {
            200..=299 => {
                read.map_err(|e| self.io_error(e, url))?;
                Ok((content_type, body))
            }
            401 => Err(PacsError::Unauthorized(url.into())),
            403 => Err(PacsError::Forbidden(url.into())),
            404 => Err(PacsError::NotFound(url.into())),
            _ => {
                // The first line of a short text answer says why; never more.
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
                let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
                let detail = if line.is_empty() || !content_type.contains("text") && !content_type.contains("json") {
                    String::new()
                } else {
                    format!(": {line}")
                };
                Err(PacsError::Status { status, detail, url: url.into() })
            }
        }
    }

    fn get(&self, url: &str, accept: &str) -> Result<(String, Vec<u8>), PacsError> {
        let mut req = self.agent.get(url).header("Accept", accept);
        if let Some(h) = self.auth.header() {
            req = req.header("Authorization", h);
        }
        self.finish(req.call(), url)
    }

    fn json<T>(&self, url: &str, parse: impl Fn(&[u8]) -> Result<T, json::JsonError>) -> Result<T, PacsError> {
        let (_, body) = self.get(url, "application/dicom+json, application/json")?;
        parse(&body).map_err(|e| PacsError::Malformed { msg: e.to_string(), url: url.into() })
    }

    /// QIDO-RS: the studies matching `query` (newest first).
    pub fn search(&self, query: &Query) -> Result<Vec<Study>, PacsError> {
        let mut params = vec![
            "includefield=00081030".to_string(),
            "includefield=00080061".into(),
            "includefield=00201206".into(),
            "includefield=00201208".into(),
        ];
        for (tag, v) in [("PatientID", &query.patient_id), ("PatientName", &query.patient_name), ("ModalitiesInStudy", &query.modality)] {
            if let Some(v) = v {
                params.push(format!("{tag}={}", encode(v)));
            }
        }
        if query.patient_name.as_deref().is_some_and(|n| n.contains('*') || n.contains('?')) {
            params.push("fuzzymatching=false".into());
        }
        let url = format!("{}/studies?{}", self.base, params.join("&"));
        let mut studies = self.json(&url, json::studies)?;
        studies.sort_by(|a, b| (&b.date, &b.time).cmp(&(&a.date, &a.time)));
        Ok(studies)
    }

    /// QIDO-RS: the series of a study.
    pub fn series(&self, study: &str) -> Result<Vec<Series>, PacsError> {
        check_uid(study)?;
        let url = format!("{}/studies/{study}/series?includefield=0008103E&includefield=00201209", self.base);
        self.json(&url, json::series)
    }

    /// QIDO-RS: the SOP Instance UIDs of a series.
    pub fn instances(&self, study: &str, series: &str) -> Result<Vec<String>, PacsError> {
        check_uid(study)?;
        check_uid(series)?;
        self.json(&format!("{}/studies/{study}/series/{series}/instances", self.base), json::instances)
    }

    /// WADO-RS: one instance as a DICOM Part 10 file, checked to be that instance.
    pub fn instance(&self, study: &str, series: &str, sop: &str) -> Result<Vec<u8>, PacsError> {
        for u in [study, series, sop] {
            check_uid(u)?;
        }
        let url = format!("{}/studies/{study}/series/{series}/instances/{sop}", self.base);
        // The stored transfer syntax as it is (no transcoding), in one part.
        let (content_type, body) = self.get(&url, "multipart/related; type=\"application/dicom\"; transfer-syntax=*")?;
        let malformed = |msg: String| PacsError::Malformed { msg, url: url.clone() };
        let boundary =
            multipart::boundary(&content_type).ok_or_else(|| malformed(format!("expected multipart/related, got {content_type:?}")))?;
        let parts = multipart::parse(&body, &boundary).map_err(|e| match e {
            multipart::MultipartError::CutShort(_) => PacsError::CutShort(url.clone()),
            other => malformed(other.to_string()),
        })?;
        let [part] = parts.as_slice() else { return Err(malformed(format!("expected one instance, got {} parts", parts.len()))) };
        let bytes = part.body.to_vec();
        verify(&bytes, sop).map_err(malformed)?;
        Ok(bytes)
    }

    /// STOW-RS: stores `files` (DICOM Part 10) in one request.
    pub fn store(&self, files: &[Vec<u8>]) -> Result<StoreResult, PacsError> {
        let url = format!("{}/studies", self.base);
        let (body, content_type) = multipart::build_dicom(files);
        let mut req =
            self.agent.post(&url).header("Content-Type", content_type).header("Accept", "application/dicom+json, application/json");
        if let Some(h) = self.auth.header() {
            req = req.header("Authorization", h);
        }
        let (_, answer) = self.finish(req.send(&body[..]), &url)?;
        json::store_result(&answer).map_err(|e| PacsError::Malformed { msg: e.to_string(), url })
    }

    /// WADO-RS into `out`/STUDY/SERIES/SOP.dcm: instances already there and valid are kept,
    /// each new one is written atomically once it is complete and checked. `progress` gets
    /// (done, total) per instance. On an error, what was complete stays; nothing is half-written.
    pub fn retrieve(
        &self,
        study: &str,
        series: Option<&str>,
        out: &Path,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Retrieved, PacsError> {
        check_uid(study)?;
        let series_uids: Vec<String> = match series {
            Some(s) => {
                check_uid(s)?;
                vec![s.to_string()]
            }
            None => self.series(study)?.into_iter().map(|s| s.series_uid).collect(),
        };
        // The whole listing first: a malformed or refused listing writes nothing.
        let mut wanted = Vec::new();
        for se in &series_uids {
            for sop in self.instances(study, se)? {
                wanted.push((se.clone(), sop));
            }
        }
        if wanted.is_empty() {
            return Err(PacsError::Empty(format!("the PACS lists no instances ({}/studies/{study})", self.base)));
        }
        let mut done = Retrieved { folder: out.join(study), files: Vec::new(), fetched: 0, kept: 0 };
        progress(0, wanted.len());
        for (k, (se, sop)) in wanted.iter().enumerate() {
            let dir = done.folder.join(se);
            let path = dir.join(format!("{sop}.dcm"));
            let present = std::fs::read(&path).ok().is_some_and(|b| verify(&b, sop).is_ok());
            if present {
                done.kept += 1;
            } else {
                let bytes = self.instance(study, se, sop)?;
                let local =
                    |e: std::io::Error| PacsError::Local { msg: format!("cannot write the cache: {e}"), path: path.display().to_string() };
                std::fs::create_dir_all(&dir).map_err(local)?;
                crate::fsutil::write_atomic(&path, &bytes).map_err(local)?;
                done.fetched += 1;
            }
            done.files.push(path);
            progress(k + 1, wanted.len());
        }
        Ok(done)
    }
}

/// What `retrieve` left in the cache.
#[derive(Debug)]
pub struct Retrieved {
    /// `out`/STUDY_UID.
    pub folder: PathBuf,
    pub files: Vec<PathBuf>,
    /// Instances downloaded now, and those already there and kept.
    pub fetched: usize,
    pub kept: usize,
}

/// The search QIDO-RS runs; `None` matches anything.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub patient_id: Option<String>,
    /// DICOM wildcard matching (`*`, `?`).
    pub patient_name: Option<String>,
    pub modality: Option<String>,
}

fn check_uid(uid: &str) -> Result<(), PacsError> {
    if crate::annotation::document::is_valid_uid(uid) { Ok(()) } else { Err(PacsError::Config(format!("not a DICOM UID: {uid:?}"))) }
}

/// Percent-encoding of a query value: RFC 3986's unreserved characters and DICOM's `*` wildcard
/// as they are, everything else (`?` included) escaped.
fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `bytes` is a complete DICOM Part 10 file of instance `sop` (parsed to the end).
pub fn verify(bytes: &[u8], sop: &str) -> Result<(), String> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err("not a DICOM file (no DICM at byte 128)".into());
    }
    let obj = dicom_object::OpenFileOptions::new().from_reader(&bytes[128..]).map_err(|e| format!("not a complete DICOM file: {e}"))?;
    let got = obj.meta().media_storage_sop_instance_uid().trim_end_matches(['\0', ' ']);
    if got != sop {
        return Err(format!("asked for instance {sop}, got {got}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
