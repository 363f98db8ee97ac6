//! Runs a GPU check in a child process of its test binary (shared by unit and integration tests).

/// What a check on a GPU adapter printed when every assertion in it passed.
pub const GPU_CHECKS_PASSED: &str = "GPU-CHECKS-PASSED";

/// Runs `child`, an `#[ignore]`d test of the calling test binary, in a process of its own and
/// passes when it printed [`GPU_CHECKS_PASSED`] (or relays its `SKIPPED:` line). Mesa's software
/// Vulkan driver now and then crashes in its exit-time teardown (gfx-rs/wgpu#1439), after every
/// test of the binary has passed; in a child process the checks' verdict is the marker, and a
/// crash after it is reported, not counted.
pub fn gpu_check_in_child(child: &str) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([child, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .output()
        .expect("the test binary runs again");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut errors = std::io::stderr();
    if let Some(skip) = stderr.lines().find(|l| l.starts_with("SKIPPED:")) {
        use std::io::Write;
        let _ = writeln!(errors, "{skip}");
        return;
    }
    assert!(stdout.contains(GPU_CHECKS_PASSED), "{child} failed ({}):\n{stdout}\n{stderr}", out.status);
    if !out.status.success() {
        use std::io::Write;
        let _ = writeln!(errors, "note: {child} passed its checks, then its process ended with {} (driver teardown)", out.status);
    }
}
