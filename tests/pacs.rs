//! Tandem against a real PACS: Debian's Orthanc with its DICOMweb plugin on a loopback port,
//! with a temporary storage folder and basic authentication. Search → get → load → ground →
//! export SR → push SR → search finds it → get it back → import equals the document.
#![cfg(feature = "pacs")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};

const USER: &str = "tandem";
const PASSWORD: &str = "orthanc-test-pw";
const PATIENT: &str = "TANDEM-PACS-1";
const PRIOR_STUDY: &str = "1.2.826.0.1.3680043.10.1234.1";
const CURRENT_STUDY: &str = "1.2.826.0.1.3680043.10.1234.2";

fn orthanc_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/bin".into()]).map(|d| d.join("Orthanc")).find(|p| p.is_file())
}

fn dicomweb_plugin() -> Option<PathBuf> {
    let candidates = ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so"];
    if let Some(p) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Some(p);
    }
    // A versioned file name (libOrthancDicomWeb.so.1.7).
    std::fs::read_dir("/usr/lib/orthanc")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libOrthancDicomWeb.so")))
}

/// Orthanc as a child process, stopped (and its storage removed) when dropped.
struct Orthanc {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Orthanc {
    fn start(binary: &Path, plugin: &Path) -> Orthanc {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let storage = dir.path().join("storage");
        let config = serde_json::json!({
            "Name": "tandem-test",
            "HttpPort": port,
            "DicomServerEnabled": false,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": true,
            "RegisteredUsers": { USER: PASSWORD },
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "Plugins": [plugin],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
            "HttpCompressionEnabled": false,
        });
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("orthanc.log")).unwrap();
        let child = Command::new(binary).arg(&config_path).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start Orthanc");
        let mut o = Orthanc { child, port, _dir: dir };
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = o.rest("GET", "/system", None) {
                break;
            }
            if let Ok(Some(status)) = o.child.try_wait() {
                panic!("Orthanc exited ({status}); log:\n{}", o.log());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "Orthanc did not start in 30 s; log:\n{}", o.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        o
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("orthanc.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/dicom-web", self.port)
    }

    /// Orthanc's own REST API (with the test user): status and body.
    fn rest(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, Vec<u8>), String> {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(10))).build().into();
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let auth = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
        let r = match (method, body) {
            ("POST", Some(b)) => agent.post(&url).header("Authorization", auth).header("Content-Type", "application/dicom").send(b),
            _ => agent.get(&url).header("Authorization", auth).call(),
        }
        .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let bytes = r.into_body().read_to_vec().map_err(|e| e.to_string())?;
        Ok((status, bytes))
    }
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    bytes
        .chunks(3)
        .flat_map(|c| {
            let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
            (0..4).map(move |k| if k <= c.len() { ABC[((n >> (18 - 6 * k)) & 63) as usize] as char } else { '=' })
        })
        .collect()
}

/// A grey PNG as a DICOM secondary capture of the test patient in `study`.
fn dicom_from_png(png: &str, study: &str, date: &str, out: &Path) {
    let img = image::open(png).unwrap().to_luma8();
    let (w, h) = (img.width() as u16, img.height() as u16);
    let n = study.rsplit('.').next().unwrap();
    let obj = dicom_object::InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::SECONDARY_CAPTURE_IMAGE_STORAGE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, format!("{study}.1.1")),
        DataElement::new(tags::STUDY_DATE, VR::DA, date),
        DataElement::new(tags::STUDY_TIME, VR::TM, "101500"),
        DataElement::new(tags::MODALITY, VR::CS, "OT"),
        DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, format!("tandem pacs test {n}")),
        DataElement::new(tags::PATIENT_NAME, VR::PN, "Test^Pacs"),
        DataElement::new(tags::PATIENT_ID, VR::LO, PATIENT),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, study),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, format!("{study}.1")),
        DataElement::new(tags::SERIES_NUMBER, VR::IS, "1"),
        DataElement::new(tags::INSTANCE_NUMBER, VR::IS, "1"),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(h)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(w)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(8u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(7u16)),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(img.into_raw())),
    ]);
    let file = obj.with_meta(dicom_object::FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)).unwrap();
    file.write_to_file(out).unwrap();
}

/// `tandem ARGS` with the test user's credentials in the environment (and no others).
fn tandem(args: &[&str], with_credentials: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
    c.args(args).env("TANDEM_DEVICE", "cpu");
    for v in ["TANDEM_PACS_TOKEN", "TANDEM_PACS_TOKEN_FILE", "TANDEM_PACS_USER", "TANDEM_PACS_PASSWORD", "TANDEM_PACS_PASSWORD_FILE"] {
        c.env_remove(v);
    }
    if with_credentials {
        c.env("TANDEM_PACS_USER", USER).env("TANDEM_PACS_PASSWORD", PASSWORD);
    }
    c.stdin(Stdio::null()).output().expect("run tandem")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}; stderr: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(!err.contains(PASSWORD), "the password leaked: {err}");
    errors[0].to_string()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

fn studies(url: &str) -> Vec<serde_json::Value> {
    let out = tandem(&["pacs", "search", url, "--patient", PATIENT, "--json"], true);
    serde_json::from_str::<serde_json::Value>(&ok(&out)).unwrap().as_array().unwrap().clone()
}

#[test]
fn search_get_ground_push_and_import_against_orthanc() {
    let Some(binary) = orthanc_binary() else {
        // Past the harness's capture, so that the skip shows in every run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: Orthanc is not installed: the PACS integration test did not run (.ci/run installs orthanc and orthanc-dicomweb)"
        );
        return;
    };
    let plugin = dicomweb_plugin().expect("Orthanc is installed but its DICOMweb plugin is not (apt-get install orthanc-dicomweb)");
    let started = Instant::now();
    let orthanc = Orthanc::start(&binary, &plugin);
    let url = orthanc.url();
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name);
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // Two studies of one patient, uploaded through Orthanc's REST API.
    dicom_from_png("tests/data/medsg-example/images/t1_a.png", PRIOR_STUDY, "20240115", &w("prior-upload.dcm"));
    dicom_from_png("tests/data/medsg-example/images/t1_b.png", CURRENT_STUDY, "20250115", &w("current-upload.dcm"));
    for f in ["prior-upload.dcm", "current-upload.dcm"] {
        let (status, body) = orthanc.rest("POST", "/instances", Some(&std::fs::read(w(f)).unwrap())).unwrap();
        assert_eq!(status, 200, "upload {f}: {}", String::from_utf8_lossy(&body));
    }

    // Without credentials: 401, one error line.
    let err = one_error_line(&tandem(&["pacs", "search", &url], false));
    assert!(err.contains("401"), "{err}");

    // Search: both studies, newest first, with date, modality and series count.
    let found = studies(&url);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0]["study_uid"], CURRENT_STUDY);
    assert_eq!(found[0]["date"], "20250115");
    assert_eq!(found[0]["modalities"], serde_json::json!(["OT"]));
    assert_eq!(found[0]["series_count"], 1);
    assert_eq!(found[1]["study_uid"], PRIOR_STUDY);
    let table = ok(&tandem(&["pacs", "search", &url, "--name", "Test*", "--modality", "OT"], true));
    assert!(table.contains("2025-01-15") && table.contains("tandem pacs test 2"), "{table}");

    // Get both into a cache; a second get keeps what is there.
    let cache = w("cache");
    for study in [PRIOR_STUDY, CURRENT_STUDY] {
        let text = ok(&tandem(&["pacs", "get", &url, study, "--out", &s(&cache)], true));
        assert!(text.contains("1 retrieved"), "{text}");
    }
    let again = ok(&tandem(&["pacs", "get", &url, CURRENT_STUDY, "--out", &s(&cache)], true));
    assert!(again.contains("0 retrieved, 1 already there"), "{again}");
    let prior = cache.join(PRIOR_STUDY).join(format!("{PRIOR_STUDY}.1")).join(format!("{PRIOR_STUDY}.1.1.dcm"));
    let current = cache.join(CURRENT_STUDY).join(format!("{CURRENT_STUDY}.1")).join(format!("{CURRENT_STUDY}.1.1.dcm"));
    assert_eq!(std::fs::read(&current).unwrap(), std::fs::read(w("current-upload.dcm")).unwrap(), "retrieved byte for byte");

    // What is not there: one error line, and the cache as it was.
    let before = files_under(&cache);
    let err = one_error_line(&tandem(&["pacs", "get", &url, "1.2.826.0.1.3680043.10.1234.99", "--out", &s(&cache)], true));
    assert!(err.contains("404") || err.contains("no instances"), "{err}");
    assert_eq!(files_under(&cache), before);

    // The retrieved files load as the viewer loads them, with the uploaded pixels.
    let quiet = |_: f32, _: &str| {};
    let loaded = tandem::study::load(&current, &quiet).unwrap();
    let original = tandem::study::load(&w("current-upload.dcm"), &quiet).unwrap();
    assert_eq!((loaded.frames[0].width, loaded.frames[0].height), (336, 336));
    assert_eq!(loaded.frames[0].to_gray().data, original.frames[0].to_gray().data);
    assert_eq!(loaded.frames[0].meta.patient_id.as_deref(), Some(PATIENT));

    // Ground the pair, export the findings as an SR, push it.
    let doc_path = w("doc.json");
    ok(&tandem(&["ground", "diff", &s(&prior), &s(&current), "--method", "baseline", "--annotations", &s(&doc_path)], false));
    let doc = tandem::annotation::io::load(&doc_path).unwrap();
    assert!(!doc.findings.is_empty(), "the baseline finds the change");
    let sr = w("report.dcm");
    ok(&tandem(&["annotations", "export", &s(&doc_path), "--format", "sr", "--out", &s(&sr)], false));
    if let Ok(out) = Command::new("dciodvfy").arg(&sr).output() {
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(errors.is_empty(), "dciodvfy errors:\n{report}");
    }
    if let Ok(out) = Command::new("dsrdump").arg(&sr).output() {
        assert!(out.status.success(), "dsrdump failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Imaging Measurement Report"));
    }
    let pushed = ok(&tandem(&["pacs", "push", &url, &s(&sr)], true));
    assert!(pushed.contains("stored 1 instance"), "{pushed}");

    // The SR is now part of the current study.
    let found = studies(&url);
    let current_study = found.iter().find(|s| s["study_uid"] == CURRENT_STUDY).unwrap();
    assert_eq!(current_study["series_count"], 2, "{current_study}");
    assert!(current_study["modalities"].as_array().unwrap().iter().any(|m| m == "SR"), "{current_study}");

    // `tandem view --pacs URL --patient ID` opens these two folders: the image series of the
    // latest study and of the previous one, not the SR.
    let client = tandem::pacs::Client::new(
        &url,
        tandem::pacs::Auth::Basic { user: USER.into(), password: PASSWORD.into() },
        Duration::from_secs(10),
    )
    .unwrap();
    let view_cache = w("view-cache");
    let (prior_dir, current_dir) = tandem::cli::pacs::fetch_pair(&client, PATIENT, &view_cache).unwrap();
    assert_eq!(files_under(&prior_dir), [prior_dir.join(format!("{PRIOR_STUDY}.1.1.dcm"))]);
    assert_eq!(files_under(&current_dir), [current_dir.join(format!("{CURRENT_STUDY}.1.1.dcm"))]);
    assert_eq!(files_under(&view_cache).len(), 2, "the SR series is not fetched for viewing");

    // Back from the PACS, the SR imports to the document that was pushed.
    let from_pacs = w("from-pacs");
    ok(&tandem(&["pacs", "get", &url, CURRENT_STUDY, "--out", &s(&from_pacs)], true));
    let sr_back: Vec<PathBuf> = files_under(&from_pacs).into_iter().filter(|p| !p.ends_with(format!("{CURRENT_STUDY}.1.1.dcm"))).collect();
    assert_eq!(sr_back.len(), 1, "{sr_back:?}");
    let imported_path = w("imported.json");
    ok(&tandem(&["annotations", "import", &s(&sr_back[0]), "--out", &s(&imported_path), "--images", &s(&prior), &s(&current)], false));
    let imported = tandem::annotation::io::load(&imported_path).unwrap();
    let by_id = |d: &tandem::annotation::Document| {
        let mut i = d.images.clone();
        i.sort_by(|a, b| a.id.cmp(&b.id));
        i
    };
    assert_eq!(by_id(&imported), by_id(&doc), "the same images, paths and all");
    assert_eq!(imported.findings.len(), doc.findings.len());
    for f in &doc.findings {
        let g = imported.finding(&f.id).unwrap_or_else(|| panic!("finding {} lost", f.id));
        assert_eq!((&g.label, g.kind, g.status, &g.source, &g.boxes), (&f.label, f.kind, f.status, &f.source, &f.boxes));
    }
    drop(orthanc);
    eprintln!("PACS round trip against Orthanc in {:.1} s", started.elapsed().as_secs_f64());
}

/// Against the real server: a bad password is a 401 and wrong input is refused before any
/// request; the token never shows.
#[test]
fn orthanc_refuses_bad_credentials_cleanly() {
    let Some(binary) = orthanc_binary() else {
        let _ = writeln!(std::io::stderr(), "SKIPPED: Orthanc is not installed: the PACS credentials test did not run");
        return;
    };
    let plugin = dicomweb_plugin().expect("Orthanc is installed but its DICOMweb plugin is not (apt-get install orthanc-dicomweb)");
    let orthanc = Orthanc::start(&binary, &plugin);
    let url = orthanc.url();
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
    c.args(["pacs", "search", &url]).env_remove("TANDEM_PACS_USER").env("TANDEM_PACS_TOKEN", "not-the-token-123");
    let out = c.output().unwrap();
    let err = one_error_line(&out);
    assert!(err.contains("401") && !err.contains("not-the-token-123"), "{err}");
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
    c.args(["pacs", "search", &url]).env("TANDEM_PACS_USER", USER).env("TANDEM_PACS_PASSWORD", "wrong");
    assert!(one_error_line(&c.output().unwrap()).contains("401"));
    let err = one_error_line(&tandem(&["pacs", "get", &url, "../../etc", "--out", "/tmp/never"], true));
    assert!(err.contains("not a DICOM UID"), "{err}");
}

/// `view --pacs` fails before any window opens when the PACS cannot be reached, and its
/// arguments go together.
#[test]
fn view_pacs_reports_an_unreachable_pacs() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/dicom-web");
    let cache = tempfile::tempdir().unwrap();
    let err = one_error_line(&tandem(&["view", "--pacs", &url, "--patient", PATIENT, "--cache", cache.path().to_str().unwrap()], true));
    assert!(err.contains("connection refused"), "{err}");
    assert!(files_under(cache.path()).is_empty());
    one_error_line(&tandem(&["view", "--patient", PATIENT], false));
    one_error_line(&tandem(&["view", "a.dcm", "--pacs", &url, "--patient", PATIENT], false));
}
