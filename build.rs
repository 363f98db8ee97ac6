//! Embeds the trained grounder (models/grounder.bpk + models/grounder.json) when present, so a
//! checkout without weights still builds and falls back to the classical grounder at run time.

use std::path::Path;

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rerun-if-changed=models");
    for name in ["grounder.bpk", "grounder.json"] {
        let src = Path::new("models").join(name);
        println!("cargo:rerun-if-changed={}", src.display());
        let bytes = std::fs::read(&src).unwrap_or_default();
        std::fs::write(Path::new(&out).join(name), bytes).expect("write OUT_DIR");
    }
}
