//! Mutation fuzzing of `tandem info`: every mutated conformance file must end in success or one
//! clean `error:` line, within a time and memory bound, in a child process whose address space
//! is limited so that an abort or a runaway allocation is caught rather than felt.
//!
//! `TANDEM_FUZZ_CASES` sets the number of cases (default 600, about a minute on 2 cores) and
//! `TANDEM_FUZZ_SEED` the seed; failing inputs are kept under `target/fuzz-failures/` (or
//! `TANDEM_FUZZ_KEEP`) to become regression files in tests/data/fuzz.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");
/// Address-space limit of each child: an allocation past it fails instead of swapping.
const ADDRESS_SPACE: u64 = 6 << 30;
/// Peak resident memory allowed for a file under 1 MB.
const PEAK_RSS: u64 = 1 << 30;
const TIME_LIMIT: Duration = Duration::from_secs(20);

fn data_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(sub)
}

/// xorshift64*: small, seeded, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Offsets of an explicit- or implicit-VR little-endian element tag in `data`.
fn find_tag(data: &[u8], group: u16, element: u16) -> Vec<usize> {
    let mut pat = group.to_le_bytes().to_vec();
    pat.extend_from_slice(&element.to_le_bytes());
    data.windows(4).enumerate().filter(|(_, w)| *w == pat.as_slice()).map(|(i, _)| i).collect()
}

/// Writes `value` into the value field of the element at `at` (explicit VR with a 2-byte length,
/// else implicit); returns false when it does not fit.
fn set_short_value(data: &mut [u8], at: usize, value: &[u8]) -> bool {
    let explicit = data.get(at + 4..at + 6).is_some_and(|vr| vr.iter().all(u8::is_ascii_uppercase));
    let start = at + 8;
    let len = if explicit {
        data.get(at + 6..at + 8).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    } else {
        data.get(at + 4..at + 8).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(len) = len else { return false };
    if start + len > data.len() || len == 0 {
        return false;
    }
    for (k, b) in data[start..start + len].iter_mut().enumerate() {
        *b = *value.get(k).unwrap_or(&b' ');
    }
    true
}

/// One mutation of `src`, described for the failure report.
fn mutate(src: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    let mut d = src.to_vec();
    let n = d.len();
    let kind = rng.below(11);
    let desc = match kind {
        0 => {
            let flips = 1 + rng.below(16);
            for _ in 0..flips {
                let i = rng.below(n);
                d[i] ^= 1 << rng.below(8);
            }
            format!("{flips} bit flips")
        }
        1 => {
            let cut = rng.below(n);
            d.truncate(cut);
            format!("truncated at {cut}")
        }
        2 => {
            // A huge length in some element header: find a plausible length field.
            let i = 132 + rng.below(n.saturating_sub(140).max(1));
            let huge = [0xFFFF_FFF0u32, 0x8000_0000, 0x7FFF_FFFF, 0x4000_0000][rng.below(4)];
            if i + 4 <= n {
                d[i..i + 4].copy_from_slice(&huge.to_le_bytes());
            }
            format!("length {huge:#x} at {i}")
        }
        3 | 4 => {
            let (tag, name) = if kind == 3 { ((0x0028, 0x0010), "Rows") } else { ((0x0028, 0x0011), "Columns") };
            let v = [0xFFFFu16, 0x8000, 0, 1, 0xFFFE][rng.below(5)];
            for at in find_tag(&d, tag.0, tag.1) {
                set_short_value(&mut d, at, &v.to_le_bytes());
            }
            format!("{name} = {v}")
        }
        5 => {
            let v = [0u16, 1, 7, 12, 24, 32, 64, 0xFFFF][rng.below(8)];
            let tag = [(0x0028, 0x0100), (0x0028, 0x0101), (0x0028, 0x0002)][rng.below(3)];
            for at in find_tag(&d, tag.0, tag.1) {
                set_short_value(&mut d, at, &v.to_le_bytes());
            }
            format!("({:04X},{:04X}) = {v}", tag.0, tag.1)
        }
        6 => {
            let v = ["2147483647", "99999999", "0", "-1", "4294967296"][rng.below(5)];
            for at in find_tag(&d, 0x0028, 0x0008) {
                set_short_value(&mut d, at, v.as_bytes());
            }
            format!("Number of Frames = {v}")
        }
        7 => {
            let uids = [
                "1.2.840.10008.1.2",
                "1.2.840.10008.1.2.1",
                "1.2.840.10008.1.2.2",
                "1.2.840.10008.1.2.5",
                "1.2.840.10008.1.2.4.50",
                "1.2.840.10008.1.2.4.80",
                "1.2.840.10008.1.2.4.90",
                "1.2.840.10008.1.2.1.99",
            ];
            let uid = uids[rng.below(uids.len())];
            for at in find_tag(&d, 0x0002, 0x0010) {
                let mut v = uid.as_bytes().to_vec();
                v.push(0);
                set_short_value(&mut d, at, &v);
            }
            format!("transfer syntax {uid}")
        }
        8 => {
            // Rows and Columns stored wider than US, as a broken writer might.
            for at in find_tag(&d, 0x0028, 0x0010).into_iter().chain(find_tag(&d, 0x0028, 0x0011)) {
                if d.get(at + 4..at + 6) == Some(b"US") {
                    d[at + 4..at + 6].copy_from_slice(b"UL");
                }
            }
            "Rows/Columns as UL".into()
        }
        9 => {
            let start = rng.below(n);
            let len = rng.below(4096).min(n - start);
            for b in &mut d[start..start + len] {
                *b = 0xFF;
            }
            format!("{len} bytes of 0xFF at {start}")
        }
        _ => {
            let start = rng.below(n);
            let len = rng.below(2048).min(n - start);
            let chunk = d[start..start + len].to_vec();
            let at = rng.below(n);
            d.splice(at..at, chunk);
            format!("{len} bytes from {start} repeated at {at}")
        }
    };
    (d, desc)
}

/// How a child process ended.
#[derive(Debug)]
struct Outcome {
    status: Option<i32>,
    signal: Option<i32>,
    peak_rss: u64,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

/// Runs `tandem ARGS` with the address-space limit, reaping it with `wait4` for its peak memory.
fn run_limited(args: &[&std::ffi::OsStr]) -> Outcome {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(TANDEM);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.env_remove("RUST_LOG").env("TANDEM_DEVICE", "cpu").env("RAYON_NUM_THREADS", "1");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: ADDRESS_SPACE, rlim_max: ADDRESS_SPACE };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start tandem");
    let pid = child.id() as libc::pid_t;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut out_pipe, &mut s).ok();
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut err_pipe, &mut s).ok();
        s
    });
    let started = Instant::now();
    let mut timed_out = false;
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        if started.elapsed() > TIME_LIMIT && !timed_out {
            timed_out = true;
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    std::mem::forget(child); // already reaped
    let exited = libc::WIFEXITED(status);
    Outcome {
        status: exited.then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        peak_rss: rusage.ru_maxrss as u64 * 1024,
        timed_out,
        stdout: String::from_utf8_lossy(&out_thread.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned(),
    }
}

/// Why an outcome breaks the contract, if it does.
fn judge(o: &Outcome, file_size: usize) -> Option<String> {
    if o.timed_out {
        return Some(format!("hung (killed after {TIME_LIMIT:?})"));
    }
    if let Some(sig) = o.signal {
        return Some(format!("killed by signal {sig}; stderr: {}", o.stderr.trim()));
    }
    if file_size < 1 << 20 && o.peak_rss > PEAK_RSS {
        return Some(format!("peak memory {} MB", o.peak_rss >> 20));
    }
    match o.status {
        Some(0) if o.stdout.trim_start().starts_with('{') && o.stderr.is_empty() => None,
        Some(0) => Some(format!("exit 0 without clean JSON; stderr: {:?}", o.stderr)),
        Some(2) => {
            let lines: Vec<&str> = o.stderr.lines().collect();
            if lines.len() == 1 && lines[0].starts_with("error: ") {
                None
            } else {
                Some(format!("exit 2 with stderr not one `error:` line: {:?}", o.stderr))
            }
        }
        other => Some(format!("exit {other:?}; stderr: {}", o.stderr.trim())),
    }
}

fn sources() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir("dicom"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() < 1 << 20))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())).collect()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn mutated_conformance_files_end_cleanly() {
    let cases: usize = env_or("TANDEM_FUZZ_CASES", 600);
    let seed: u64 = env_or("TANDEM_FUZZ_SEED", 20261204);
    let keep = std::env::var_os("TANDEM_FUZZ_KEEP")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures"));
    let sources = sources();
    assert!(sources.len() > 50, "the conformance files are missing");
    let work = tempfile::tempdir().unwrap();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let peak = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let case = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if case >= cases {
                        break;
                    }
                    let mut rng = Rng(seed ^ (case as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let (name, src) = &sources[rng.below(sources.len())];
                    let (data, what) = mutate(src, &mut rng);
                    let path = work.path().join(format!("case-{case}.dcm"));
                    std::fs::write(&path, &data).unwrap();
                    let o = run_limited(&["info".as_ref(), path.as_os_str(), "--json".as_ref()]);
                    peak.fetch_max(o.peak_rss, std::sync::atomic::Ordering::Relaxed);
                    if let Some(why) = judge(&o, data.len()) {
                        std::fs::create_dir_all(&keep).ok();
                        let kept = keep.join(format!("seed{seed}-case{case}-{name}"));
                        std::fs::copy(&path, &kept).ok();
                        failures.lock().unwrap().push(format!("case {case} ({name}, {what}): {why} [kept as {}]", kept.display()));
                    }
                    std::fs::remove_file(&path).ok();
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "fuzz: {cases} cases (seed {seed}) in {:.0} s, peak child memory {} MB, {} failure(s)",
        started.elapsed().as_secs_f64(),
        peak.into_inner() >> 20,
        failures.len()
    );
    assert!(failures.is_empty(), "{} of {cases} cases broke the contract:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn regression_files_end_in_one_error_line() {
    let dir = data_dir("fuzz");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "dcm") {
            continue;
        }
        let o = run_limited(&["info".as_ref(), path.as_os_str(), "--json".as_ref()]);
        let size = std::fs::metadata(&path).unwrap().len() as usize;
        assert_eq!(judge(&o, size), None, "{}", path.display());
        assert_eq!(o.status, Some(2), "{} should be refused: {}", path.display(), o.stdout);
        checked += 1;
    }
    assert!(checked >= 3, "regression files missing from {}", dir.display());
}

/// The conformance set's broken files: `tandem info` prints exactly one `error:` line each.
#[test]
fn conformance_error_files_print_one_error_line() {
    let reference: serde_json::Value = serde_json::from_slice(&std::fs::read(data_dir("dicom").join("reference.json")).unwrap()).unwrap();
    let mut checked = 0;
    for (name, r) in reference.as_object().unwrap() {
        let path = data_dir("dicom").join(name);
        if r["pixels"].as_str() == Some("ok") || !path.exists() {
            continue;
        }
        let o = run_limited(&["info".as_ref(), path.as_os_str(), "--json".as_ref()]);
        assert_eq!(judge(&o, 0), None, "{name}");
        assert_eq!(o.status, Some(2), "{name} should fail like pydicom does");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} error files checked");
}

/// A readable file prints nothing on stderr, with or without --verbose.
#[test]
fn a_readable_file_prints_nothing_on_stderr() {
    let path = data_dir("dicom").join("MR_small.dcm");
    let o = run_limited(&["info".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert_eq!(o.status, Some(0), "{}", o.stderr);
    assert_eq!(o.stderr, "");
    let o = run_limited(&["--verbose".as_ref(), "info".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert_eq!(o.status, Some(0), "{}", o.stderr);
}
