//! Shared by the simulator's integration tests: where the two binaries are.

use std::path::PathBuf;
use std::process::Command;

/// `kks-sim`, built by cargo for this test.
pub fn sim() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kks-sim"))
}

/// `kks-switch` from the same target directory (built by `cargo test
/// --workspace`; built here if this crate's tests run alone).
pub fn kks_switch() -> PathBuf {
    let p = sim().with_file_name("kks-switch");
    if !p.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "kks-switch", "--bin", "kks-switch"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(st.success(), "building kks-switch failed");
    }
    assert!(p.is_file(), "no kks-switch at {}", p.display());
    p
}
