//! Decides at build time which halves of the suite cannot run here, so that the test harness
//! reports them as ignored (with the reason) instead of counting a silent skip as a pass:
//! - `itsm_no_postgres`: `ITSM_TEST_POSTGRES_URL` is unset (and not required by
//!   `ITSM_TEST_REQUIRE_POSTGRES=1`, which makes the PostgreSQL tests run and fail instead);
//! - `itsm_no_alertmanager`: `prometheus-alertmanager` or `amtool` is not on `PATH` (and not
//!   required by `ITSM_TEST_REQUIRE_ALERTMANAGER=1`).
//!
//! Cargo runs this again when one of these variables (or `PATH`) changes, so `cargo test`
//! always reflects the environment it runs in.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(itsm_no_postgres)");
    println!("cargo::rustc-check-cfg=cfg(itsm_no_alertmanager)");
    println!("cargo::rerun-if-changed=build.rs");
    for var in [
        "ITSM_TEST_POSTGRES_URL",
        "ITSM_TEST_REQUIRE_POSTGRES",
        "ITSM_TEST_REQUIRE_ALERTMANAGER",
        "PATH",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }

    let postgres_url = std::env::var("ITSM_TEST_POSTGRES_URL").unwrap_or_default();
    if postgres_url.trim().is_empty() && !required("ITSM_TEST_REQUIRE_POSTGRES") {
        println!("cargo::rustc-cfg=itsm_no_postgres");
    }

    let binaries: Vec<Option<PathBuf>> = ["prometheus-alertmanager", "amtool"]
        .into_iter()
        .map(on_path)
        .collect();
    for found in binaries.iter().flatten() {
        // Uninstalling one reruns this script.
        println!("cargo::rerun-if-changed={}", found.display());
    }
    if binaries.iter().any(Option::is_none) && !required("ITSM_TEST_REQUIRE_ALERTMANAGER") {
        println!("cargo::rustc-cfg=itsm_no_alertmanager");
    }
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|value| value == "1")
}

/// The executable `name` in one of the `PATH` folders.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|folder| folder.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
