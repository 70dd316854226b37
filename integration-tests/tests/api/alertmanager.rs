//! A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`, installed by `.ci/run`)
//! on loopback, its webhook receiver pointed at the service with an integration token: an
//! alert fired with `amtool` opens one incident, and resolving it resolves the incident.
//!
//! Reported as ignored when the binaries are missing and `ITSM_TEST_REQUIRE_ALERTMANAGER` is
//! not `1` (decided when the tests are built: `integration-tests/build.rs`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{read, TestApp};

use super::alerts::api_token;

const ALERTMANAGER: &str = "prometheus-alertmanager";
const AMTOOL: &str = "amtool";
const REQUIRE_VAR: &str = "ITSM_TEST_REQUIRE_ALERTMANAGER";

fn installed(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running Alertmanager, stopped (and its files removed) when dropped.
struct RunningAlertmanager {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for RunningAlertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_alertmanager(webhook: &str, token: &str) -> RunningAlertmanager {
    let dir = std::env::temp_dir().join(format!("itsm-alertmanager-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let config = format!(
        r#"global:
  resolve_timeout: 5s
route:
  receiver: itsm
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: itsm
    webhook_configs:
      - url: '{webhook}'
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: '{token}'
"#
    );
    let config_file = dir.join("alertmanager.yml");
    std::fs::write(&config_file, config).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let child = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // No gossip: one Alertmanager alone on loopback.
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus-alertmanager");
    let running = RunningAlertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
        dir,
    };
    let client = itsm_integration_tests::reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("{}/-/ready", running.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not become ready: {}",
            std::fs::read_to_string(running.dir.join("alertmanager.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `amtool alert add` with `args` against `url`.
async fn amtool_add(url: &str, args: Vec<String>) {
    let url = url.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(AMTOOL)
            .arg("alert")
            .arg("add")
            .args(&args)
            .arg(format!("--alertmanager.url={url}"))
            .output()
            .expect("run amtool")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "amtool failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Polls the monitoring incidents until `done` holds, for at most a minute.
async fn wait_for(app: &TestApp, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = app
            .admin(Method::GET, "/api/v1/incidents?channel=monitoring")
            .send()
            .await
            .unwrap();
        let (status, page) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if done(&items) {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn a_real_alertmanager_opens_and_resolves_one_incident(app: TestApp) {
    // Without them the test is ignored (see `build.rs`), unless they are required.
    assert!(
        installed(ALERTMANAGER) && installed(AMTOOL),
        "{ALERTMANAGER} or {AMTOOL} is not installed ({REQUIRE_VAR}=1 requires them, or they \
         were removed after the tests were built)"
    );
    let token = api_token(&app, "integration", Some(&["alerts:write"])).await;
    let response = app
        .admin(Method::POST, "/api/v1/alert-rules")
        .json(
            &json!({"name": "Alertmanager", "position": 1, "source": "alertmanager",
                      "impact": "high", "urgency": "medium", "resolve_incident": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let webhook = app.url("/api/v1/integrations/alertmanager");
    let alertmanager = start_alertmanager(&webhook, &token).await;

    let labels = vec![
        "alertname=DiskAlmostFull".to_owned(),
        "instance=web01:9100".to_owned(),
        "severity=critical".to_owned(),
        "--annotation=summary=Disk almost full on web01".to_owned(),
    ];
    amtool_add(&alertmanager.url, labels.clone()).await;
    let opened = wait_for(&app, "the incident to open", |items| !items.is_empty()).await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    let incident = &opened[0];
    assert_eq!(incident["title"], "Disk almost full on web01");
    assert_eq!(incident["priority"], "p2");
    let id = incident["id"].as_str().unwrap().to_owned();

    // The same alert again (Alertmanager deduplicates it too, and repeats the group only
    // after repeat_interval): still one incident.
    amtool_add(&alertmanager.url, labels.clone()).await;

    // Ended a minute ago: Alertmanager sends it resolved.
    let ended = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let mut resolve = labels;
    resolve.push(format!("--end={ended}"));
    amtool_add(&alertmanager.url, resolve).await;
    let resolved = wait_for(&app, "the incident to resolve", |items| {
        items.iter().all(|i| i["state"] == "resolved")
    })
    .await;
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0]["id"], id.as_str());

    let response = app
        .admin(Method::GET, "/api/v1/alerts?source=alertmanager")
        .send()
        .await
        .unwrap();
    let (_, alerts) = read(response).await;
    let alerts = alerts["items"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["status"], "resolved");
    assert_eq!(alerts[0]["incident_id"], id.as_str());
    drop(alertmanager);
}

// Written out rather than through `on_both_backends!`: each half is also ignored when the
// binaries are missing.
mod sqlite {
    use itsm_integration_tests::{Backend, TestApp};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        itsm_no_alertmanager,
        ignore = "prometheus-alertmanager or amtool is not installed"
    )]
    async fn a_real_alertmanager_opens_and_resolves_one_incident() {
        let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
        super::a_real_alertmanager_opens_and_resolves_one_incident(app).await;
    }
}

mod postgres {
    use itsm_integration_tests::{Backend, TestApp, NOT_BUILT_FOR_POSTGRES};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
    #[cfg_attr(
        all(itsm_no_alertmanager, not(itsm_no_postgres)),
        ignore = "prometheus-alertmanager or amtool is not installed"
    )]
    async fn a_real_alertmanager_opens_and_resolves_one_incident() {
        let app = TestApp::spawn(Backend::Postgres)
            .await
            .unwrap_or_else(|| panic!("{NOT_BUILT_FOR_POSTGRES}"));
        super::a_real_alertmanager_opens_and_resolves_one_incident(app).await;
    }
}
