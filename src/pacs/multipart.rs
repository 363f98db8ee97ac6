//! multipart/related bodies (RFC 2387) as WADO-RS answers and STOW-RS requests carry them.

/// The boundary parameter of a `multipart/related` Content-Type, unquoted.
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/related") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string()).filter(|b| !b.is_empty())
    })
}

/// One part: its headers (lower-case names) and its bytes.
#[derive(Debug)]
pub struct Part<'a> {
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

impl Part<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("the multipart answer has no opening boundary")]
    NoStart,
    #[error("the multipart answer was cut short (part {0} has no end)")]
    CutShort(usize),
    #[error("part {0} of the multipart answer has malformed headers")]
    Headers(usize),
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// Splits `body` into its parts. The closing delimiter (`--boundary--`) must be there: a body
/// without it was cut short, and none of its parts is trusted.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, MultipartError> {
    let delimiter = format!("--{boundary}").into_bytes();
    let start = find(body, &delimiter, 0).ok_or(MultipartError::NoStart)?;
    // The preamble before the first delimiter is ignored, as RFC 2046 says.
    let mut at = start + delimiter.len();
    let mut parts = Vec::new();
    let mut next_delimiter = b"\r\n".to_vec();
    next_delimiter.extend_from_slice(&delimiter);
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        let n = parts.len() + 1;
        // Transport padding, then the line break that ends the delimiter line.
        let line_end = find(body, b"\r\n", at).ok_or(MultipartError::CutShort(n))?;
        if !body[at..line_end].iter().all(|b| *b == b' ' || *b == b'\t') {
            return Err(MultipartError::Headers(n));
        }
        let headers_start = line_end + 2;
        let (headers_end, content_start) = if body[headers_start..].starts_with(b"\r\n") {
            (headers_start, headers_start + 2)
        } else {
            let e = find(body, b"\r\n\r\n", headers_start).ok_or(MultipartError::CutShort(n))?;
            (e, e + 4)
        };
        let headers = std::str::from_utf8(&body[headers_start..headers_end])
            .map_err(|_| MultipartError::Headers(n))?
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).ok_or(MultipartError::Headers(n))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let end = find(body, &next_delimiter, content_start).ok_or(MultipartError::CutShort(n))?;
        parts.push(Part { headers, body: &body[content_start..end] });
        at = end + next_delimiter.len();
        if at + 2 > body.len() {
            return Err(MultipartError::CutShort(n + 1));
        }
    }
}

/// A `multipart/related; type="application/dicom"` body of `files` and its Content-Type.
pub fn build_dicom(files: &[Vec<u8>]) -> (Vec<u8>, String) {
    // A boundary that occurs in no file: random, and checked.
    let mut boundary;
    loop {
        boundary = format!("tandem-{}", uuid::Uuid::new_v4().simple());
        let b = boundary.as_bytes();
        if files.iter().all(|f| find(f, b, 0).is_none()) {
            break;
        }
    }
    let mut body = Vec::with_capacity(files.iter().map(|f| f.len() + 100).sum());
    for f in files {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
        body.extend_from_slice(f);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_is_read_quoted_or_not() {
        assert_eq!(boundary("multipart/related; type=\"application/dicom\"; boundary=\"ab:c\"").as_deref(), Some("ab:c"));
        assert_eq!(boundary("Multipart/Related;boundary=xyz;type=application/dicom").as_deref(), Some("xyz"));
        assert_eq!(boundary("application/dicom+json"), None);
        assert_eq!(boundary("multipart/related; type=application/dicom"), None);
    }

    #[test]
    fn built_bodies_parse_back() {
        let files = vec![b"DICM one\r\n--not a boundary".to_vec(), Vec::new(), vec![0u8, 13, 10, 45, 45]];
        let (body, ct) = build_dicom(&files);
        let parts = parse(&body, &boundary(&ct).unwrap()).unwrap();
        assert_eq!(parts.len(), 3);
        for (p, f) in parts.iter().zip(&files) {
            assert_eq!(p.body, f.as_slice());
            assert_eq!(p.header("content-type"), Some("application/dicom"));
        }
    }

    #[test]
    fn a_body_cut_anywhere_is_refused() {
        let (body, ct) = build_dicom(&[vec![7u8; 300], vec![9u8; 40]]);
        let b = boundary(&ct).unwrap();
        for cut in 0..body.len() - 2 {
            assert!(parse(&body[..cut], &b).is_err(), "cut at {cut} of {} parsed", body.len());
        }
    }

    #[test]
    fn preamble_and_padding_are_allowed() {
        let body = b"preamble\r\n--b  \r\nContent-Type: application/dicom\r\n\r\nXY\r\n--b--";
        let parts = parse(body, "b").unwrap();
        assert_eq!(parts[0].body, b"XY");
        assert_eq!(parse(b"--b\r\nno colon\r\n\r\nX\r\n--b--", "b").unwrap_err(), MultipartError::Headers(1));
    }
}
