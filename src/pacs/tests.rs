//! The client against a scripted HTTP server on loopback: answers, errors and the cache.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::*;

/// One scripted answer: raw bytes to send, then close (or hang for `Hang`).
enum Reply {
    Bytes(Vec<u8>),
    Hang,
}

fn http(status: &str, content_type: &str, body: &[u8]) -> Reply {
    let mut r = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
        .into_bytes();
    r.extend_from_slice(body);
    Reply::Bytes(r)
}

/// Serves `replies` in order, one connection each; returns the base URL and the requests seen
/// (request line and headers).
fn serve(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/dicom-web", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for reply in replies {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            log.lock().unwrap().push(head);
            match reply {
                Reply::Bytes(b) => {
                    let _ = stream.write_all(&b);
                }
                Reply::Hang => std::thread::sleep(Duration::from_secs(5)),
            }
        }
    });
    (url, seen)
}

fn client(url: &str, auth: Auth) -> Client {
    Client::new(url, auth, Duration::from_secs(2)).unwrap()
}

/// A small real DICOM file (Part 10) of instance `sop`.
fn dicom_file(sop: &str) -> Vec<u8> {
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::{tags, uids};
    let obj = dicom_object::InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::SECONDARY_CAPTURE_IMAGE_STORAGE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop),
        DataElement::new(tags::PATIENT_ID, VR::LO, "P1"),
    ]);
    let file = obj.with_meta(dicom_object::FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)).unwrap();
    let mut b = Vec::new();
    file.write_all(&mut b).unwrap();
    b
}

fn one_part(bytes: &[u8]) -> Reply {
    let (body, ct) = multipart::build_dicom(&[bytes.to_vec()]);
    http("200 OK", &ct, &body)
}

const SERIES: &[u8] = br#"[{"0020000E":{"vr":"UI","Value":["1.2.3.1"]},"00080060":{"vr":"CS","Value":["OT"]}}]"#;
const INSTANCES: &[u8] = br#"[{"00080018":{"vr":"UI","Value":["1.2.3.1.1"]}},{"00080018":{"vr":"UI","Value":["1.2.3.1.2"]}}]"#;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn search_sends_the_query_and_credentials() {
    let body = br#"[{"0020000D":{"vr":"UI","Value":["1.2.3"]},"00080020":{"vr":"DA","Value":["20200101"]}},
        {"0020000D":{"vr":"UI","Value":["1.2.4"]},"00080020":{"vr":"DA","Value":["20240101"]}}]"#;
    let (url, seen) = serve(vec![http("200 OK", "application/dicom+json", body), http("200 OK", "application/dicom+json", b"[]")]);
    let c = client(&url, Auth::Basic { user: "alice".into(), password: "s3cret".into() });
    let q = Query { patient_id: Some("P 1".into()), patient_name: Some("Do*".into()), modality: Some("MR".into()) };
    let studies = c.search(&q).unwrap();
    // Newest first.
    assert_eq!(studies.iter().map(|s| s.study_uid.as_str()).collect::<Vec<_>>(), ["1.2.4", "1.2.3"]);
    let c = client(&url, Auth::Bearer("tok-123".into()));
    assert!(c.search(&Query::default()).unwrap().is_empty());
    let seen = seen.lock().unwrap();
    assert!(
        seen[0].contains("PatientID=P%201") && seen[0].contains("PatientName=Do*") && seen[0].contains("ModalitiesInStudy=MR"),
        "{}",
        seen[0]
    );
    // alice:s3cret
    assert!(seen[0].contains("Basic YWxpY2U6czNjcmV0"), "{}", seen[0]);
    assert!(seen[1].contains("Bearer tok-123"), "{}", seen[1]);
}

#[test]
fn http_errors_are_named() {
    let (url, _) = serve(vec![
        http("401 Unauthorized", "text/plain", b""),
        http("403 Forbidden", "text/plain", b""),
        http("404 Not Found", "text/plain", b""),
        http("500 Internal Server Error", "text/plain", b"database locked\nmore"),
        http("200 OK", "application/dicom+json", b"[{\"0020000D\": {\"vr\""),
    ]);
    let c = client(&url, Auth::Bearer("very-secret-token".into()));
    let errors: Vec<PacsError> = (0..5).map(|_| c.search(&Query::default()).unwrap_err()).collect();
    assert!(matches!(errors[0], PacsError::Unauthorized(_)), "{}", errors[0]);
    assert!(matches!(errors[1], PacsError::Forbidden(_)), "{}", errors[1]);
    assert!(matches!(errors[2], PacsError::NotFound(_)), "{}", errors[2]);
    assert!(matches!(&errors[3], PacsError::Status { status: 500, detail, .. } if detail == ": database locked"), "{}", errors[3]);
    assert!(matches!(errors[4], PacsError::Malformed { .. }), "{}", errors[4]);
    for e in &errors {
        let text = e.to_string();
        assert!(!text.contains("very-secret-token") && !text.contains('\n'), "{text}");
    }
}

#[test]
fn refused_connections_and_timeouts_are_named() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = client(&format!("http://127.0.0.1:{port}/dicom-web"), Auth::None).search(&Query::default()).unwrap_err();
    assert!(matches!(e, PacsError::Refused(_)), "{e}");
    let (url, _) = serve(vec![Reply::Hang]);
    let c = Client::new(&url, Auth::None, Duration::from_millis(300)).unwrap();
    let e = c.search(&Query::default()).unwrap_err();
    assert!(matches!(e, PacsError::Timeout { .. }), "{e}");
}

#[test]
fn urls_with_credentials_or_other_schemes_are_refused() {
    assert!(matches!(Client::new("http://u:p@host/dicom-web", Auth::None, Duration::from_secs(1)), Err(PacsError::Config(_))));
    assert!(matches!(Client::new("ftp://host", Auth::None, Duration::from_secs(1)), Err(PacsError::Config(_))));
    assert!(Client::new("https://pacs.example.org/dicom-web/", Auth::None, Duration::from_secs(1)).is_ok());
}

#[test]
fn auth_comes_from_the_environment_and_never_prints() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "from-file\n").unwrap();
    let vars = |pairs: Vec<(&'static str, String)>| move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.clone());
    let a = Auth::from_vars(vars(vec![(ENV_TOKEN_FILE, token_file.display().to_string())])).unwrap();
    assert!(matches!(&a, Auth::Bearer(t) if t == "from-file"));
    assert!(!format!("{a:?}").contains("from-file"));
    let b = Auth::from_vars(vars(vec![(ENV_USER, "bob".into()), (ENV_PASSWORD, "pw".into())])).unwrap();
    assert_eq!(format!("{b:?}"), "HTTP basic as bob");
    assert!(matches!(Auth::from_vars(vars(vec![])).unwrap(), Auth::None));
    assert!(matches!(Auth::from_vars(vars(vec![(ENV_TOKEN, "two words".into())])), Err(PacsError::Config(_))));
    assert!(Auth::from_vars(vars(vec![(ENV_TOKEN_FILE, "/nonexistent/token".into())])).is_err());
    assert_eq!(base64(b"alice:s3cret"), "YWxpY2U6czNjcmV0");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"a"), "YQ==");
}

#[test]
fn retrieve_writes_verified_files_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dicom_file("1.2.3.1.1"), dicom_file("1.2.3.1.2"));
    let (url, _) = serve(vec![
        http("200 OK", "application/dicom+json", SERIES),
        http("200 OK", "application/dicom+json", INSTANCES),
        one_part(&a),
        one_part(&b),
        // The second run lists again and fetches nothing.
        http("200 OK", "application/dicom+json", SERIES),
        http("200 OK", "application/dicom+json", INSTANCES),
    ]);
    let c = client(&url, Auth::None);
    let mut steps = Vec::new();
    let r = c.retrieve("1.2.3", None, dir.path(), &mut |d, t| steps.push((d, t))).unwrap();
    assert_eq!((r.fetched, r.kept), (2, 0));
    assert_eq!(steps, [(0, 2), (1, 2), (2, 2)]);
    assert_eq!(std::fs::read(&r.files[1]).unwrap(), b);
    assert_eq!(r.files[0], dir.path().join("1.2.3/1.2.3.1/1.2.3.1.1.dcm"));
    let again = c.retrieve("1.2.3", None, dir.path(), &mut |_, _| {}).unwrap();
    assert_eq!((again.fetched, again.kept), (0, 2));
}

/// A bad answer part-way leaves the instances already complete and nothing else: no partial
/// file, no temporary file; the next run fetches only what is missing.
#[test]
fn bad_answers_leave_the_cache_as_it_was() {
    let a = dicom_file("1.2.3.1.1");
    let b = dicom_file("1.2.3.1.2");
    let (body, ct) = multipart::build_dicom(std::slice::from_ref(&b));
    let cut = http("200 OK", &ct, &body[..body.len() - 30]);
    // A Content-Length longer than what comes: the connection closes mid-answer.
    let mut short = format!("HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    short.extend_from_slice(&body[..body.len() / 2]);
    let wrong = one_part(&dicom_file("1.2.3.1.9"));
    let truncated_dicom = one_part(&b[..b.len() - 5]);
    for (what, bad) in [
        ("multipart cut short", cut),
        ("connection closed early", Reply::Bytes(short)),
        ("server error", http("500 Internal Server Error", "text/plain", b"boom")),
        ("another instance", wrong),
        ("a truncated DICOM file", truncated_dicom),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (url, _) = serve(vec![
            http("200 OK", "application/dicom+json", SERIES),
            http("200 OK", "application/dicom+json", INSTANCES),
            one_part(&a),
            bad,
        ]);
        let e = client(&url, Auth::None).retrieve("1.2.3", None, dir.path(), &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, PacsError::CutShort(_) | PacsError::Status { .. } | PacsError::Malformed { .. }), "{what}: {e}");
        let files = files_under(dir.path());
        assert_eq!(files, [dir.path().join("1.2.3/1.2.3.1/1.2.3.1.1.dcm")], "{what}: {e}");
    }
    // A malformed listing writes nothing at all.
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = serve(vec![http("200 OK", "application/dicom+json", SERIES), http("200 OK", "application/dicom+json", b"[{\"0008")]);
    let e = client(&url, Auth::None).retrieve("1.2.3", None, dir.path(), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, PacsError::Malformed { .. }), "{e}");
    assert!(files_under(dir.path()).is_empty());
}

#[test]
fn store_reports_what_the_server_kept() {
    let ok = br#"{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3.1.1"]}}]}}"#;
    let (url, seen) = serve(vec![http("200 OK", "application/dicom+json", ok)]);
    let r = client(&url, Auth::None).store(&[dicom_file("1.2.3.1.1")]).unwrap();
    assert_eq!(r.stored, ["1.2.3.1.1"]);
    let head = seen.lock().unwrap()[0].clone();
    assert!(head.starts_with("POST /dicom-web/studies "), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: multipart/related; type=\"application/dicom\"; boundary="), "{head}");
}
