//! The README's walk-through is `examples/walkthrough.sh` (issue 13, item 8): run with bash,
//! curl and jq against the real binary on a fresh database of each backend, twice on the same
//! database; the README shows the script's sections, not a copy that could drift.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use itsm_integration_tests::{Backend, RealServer, ScratchDatabase, ADMIN_PASSWORD};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace folder")
        .to_path_buf()
}

fn script() -> PathBuf {
    repository().join("examples/walkthrough.sh")
}

/// Runs the script against `base` with `password` (none: the variable unset).
async fn run(base: &str, password: Option<&str>) -> Output {
    let mut command = Command::new("bash");
    command
        .arg(script())
        .env("ITSM_URL", base)
        .env_remove("ITSM_ADMIN_PASSWORD");
    if let Some(password) = password {
        command.env("ITSM_ADMIN_PASSWORD", password);
    }
    tokio::task::spawn_blocking(move || command.output().expect("bash runs the walk-through"))
        .await
        .expect("the walk-through task")
}

async fn walkthrough_runs_twice_on_a_fresh_service(backend: Backend) {
    let database = ScratchDatabase::new(backend)
        .unwrap_or_else(|| panic!("{}", itsm_integration_tests::NOT_BUILT_FOR_POSTGRES));
    let server = RealServer::start(&database.url).await;
    for round in 1..=2 {
        let output = run(&server.base, Some(ADMIN_PASSWORD)).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "run {round} failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        // What it shows: the ETag, a replayed Idempotency-Key with its header, reopen_count
        // after a reopen, and the 409 of a refused reopen.
        for shown in [
            "etag: \"1\"",
            "idempotent-replayed: true",
            "\"reopen_count\":1",
            "{\"status\":409,\"detail\":\"cannot reopen",
            "{\"outcome\":\"deduplicated\"}",
        ] {
            assert!(
                stdout.contains(shown),
                "run {round} lacks {shown}:\n{stdout}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_walkthrough_runs_twice_on_a_fresh_service() {
    walkthrough_runs_twice_on_a_fresh_service(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
async fn postgres_walkthrough_runs_twice_on_a_fresh_service() {
    walkthrough_runs_twice_on_a_fresh_service(Backend::Postgres).await;
}

/// Without the admin password the script says which variable to set, and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_names_the_missing_password() {
    // Nothing listens here: a request would fail differently.
    let output = run("http://127.0.0.1:9", None).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("set ITSM_ADMIN_PASSWORD"), "{stderr}");
    assert!(output.stdout.is_empty());
}

/// The README's blocks marked `<!-- examples/walkthrough.sh -->` are the script after its
/// helpers, section by section (the script's `### title` lines are the README's headings).
#[test]
fn the_readme_shows_the_script() {
    let script = std::fs::read_to_string(script()).expect("the script");
    let (_, walk) = script
        .split_once("# --- the walk-through ---\n")
        .expect("the script marks where the walk-through starts");
    let mut sections = vec![String::new()];
    for line in walk.lines() {
        if line.starts_with("### ") {
            sections.push(String::new());
        } else {
            let section = sections.last_mut().expect("a section");
            section.push_str(line);
            section.push('\n');
        }
    }
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README.md");
    let mut shown = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line != "<!-- examples/walkthrough.sh -->" {
            continue;
        }
        assert_eq!(lines.next(), Some("```sh"), "a marked block is a sh block");
        let mut block = String::new();
        for line in lines.by_ref().take_while(|line| *line != "```") {
            block.push_str(line);
            block.push('\n');
        }
        shown.push(block);
    }
    let trimmed = |blocks: &[String]| -> Vec<String> {
        blocks
            .iter()
            .map(|b| b.trim_end_matches('\n').to_owned())
            .collect()
    };
    assert_eq!(
        trimmed(&shown),
        trimmed(&sections),
        "README.md and examples/walkthrough.sh differ: copy the script's sections into the \
         README's marked blocks"
    );
}
