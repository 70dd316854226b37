//! `make bench`: the load generator. Starts the release `itsm` binary on a fresh database
//! (SQLite, and PostgreSQL when ITSM_BENCH_POSTGRES_URL is set), seeds it with `itsm seed`,
//! runs each scenario at concurrency 1, 16 and 64 after a warm-up, and prints one table:
//! scenario, backend, concurrency, requests/s, p50, p99, max, errors, server peak RSS. The same
//! figures go to target/bench/results.json. After seeding it writes the query plan of each
//! incident list filter (`itsm plans`) to target/bench/plans-<backend>.txt.
//!
//! BENCH_QUICK=1 uses small volumes and short runs (a smoke check in under two minutes);
//! BENCH_INCIDENTS=N changes the seeded volume; BENCH_ONLY=word runs the scenarios whose name
//! contains the word (BENCH_ONLY=storm: the alert storm alone); BENCH_SKIP_SQLITE=1 measures
//! PostgreSQL alone. Two hostile loads run with a GET by number beside them, whose p99 they
//! report (goal: under 50 ms): `login flood` (64 clients signing in) and `search storm` (60
//! clients searching a word in every seeded incident).
//!
//! BENCH_SOAK_SECONDS=N (`make soak`) runs a soak instead: every scenario mixed, at
//! concurrency 16, for N seconds, reporting each minute's requests, errors and p99 and the
//! server's resident memory at the start, each minute and the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

// The load generator shares the two cores with the server: the less it spends, the more
// the figures measure the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN_PASSWORD: &str = "bench-admin-password";

struct Settings {
    quick: bool,
    /// A soak of this length instead of the scenario table.
    soak: Option<Duration>,
    seed_incidents: usize,
    warm_up: Duration,
    duration: Duration,
    concurrency: Vec<usize>,
    /// BENCH_SLA_SECONDS=T: seed under an SLA policy of T seconds (24x7), run the table (before
    /// the seeded timers fall due when T is long enough), then measure the SLA worker's lag
    /// while the warnings and breaches of the seeded timers fall due.
    sla_target_seconds: Option<u64>,
}

impl Settings {
    fn from_env() -> Self {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
        let soak = std::env::var("BENCH_SOAK_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs);
        let seed_default = match (quick, soak) {
            (true, _) => 10_000,
            (false, Some(_)) => 100_000,
            (false, None) => 1_000_000,
        };
        Self {
            quick,
            soak,
            seed_incidents: std::env::var("BENCH_INCIDENTS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(seed_default),
            warm_up: Duration::from_millis(if quick { 200 } else { 2_000 }),
            duration: Duration::from_millis(if quick { 1_000 } else { 10_000 }),
            // BENCH_CONCURRENCY=64 (or "16,64") measures at those levels only.
            concurrency: std::env::var("BENCH_CONCURRENCY")
                .ok()
                .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
                .filter(|levels: &Vec<usize>| !levels.is_empty())
                .unwrap_or_else(|| vec![1, 16, 64]),
            sla_target_seconds: std::env::var("BENCH_SLA_SECONDS")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
struct Measurement {
    scenario: String,
    backend: String,
    concurrency: usize,
    requests_per_second: f64,
    /// Requests answered 2xx per second (refusals such as 429 left out).
    accepted_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: usize,
    /// Expected refusals, such as 412 under If-Match contention, retried by the client.
    conflicts: usize,
    server_peak_rss_mb: f64,
}

/// The `itsm` server under test, as a child process.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Peak resident memory since the last reset, in MB (Linux `VmHWM`).
    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// Resident memory now, in MB (Linux `VmRSS`).
    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// Resets the peak so that each scenario reports its own.
    fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }
}

fn itsm_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.with_file_name("itsm")
}

/// Runs an `itsm` command to completion and returns what it printed.
fn run_itsm(args: &[&str], env: &[(&str, String)], dir: &Path) -> String {
    let output = Command::new(itsm_binary())
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("run itsm");
    assert!(output.status.success(), "itsm {args:?} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Where the figures and the query plans are written.
fn bench_output_dir() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn start_server(env: &[(&str, String)], dir: &Path) -> Server {
    let port = free_port();
    let child = Command::new(itsm_binary())
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("ITSM_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("start itsm");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = Client::new();
    for _ in 0..200 {
        if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await {
            if response.status() == StatusCode::OK {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not become ready");
}

/// A request to make: method, path, body. Built fresh for every call by a scenario.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    if_match: Option<String>,
}

impl Call {
    fn get(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            body: None,
            if_match: None,
        }
    }
}

/// What a scenario does for the n-th request of a worker.
type MakeCall = Arc<dyn Fn(usize, usize) -> Call + Send + Sync>;

struct Scenario {
    name: &'static str,
    make: MakeCall,
    /// For read-modify-write scenarios: statuses that are expected under contention.
    expected_refusals: &'static [StatusCode],
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: usize,
    conflicts: usize,
}

async fn drive(
    client: &Client,
    base: &str,
    token: &str,
    scenario: &Scenario,
    concurrency: usize,
    run_for: Duration,
) -> (Tally, f64) {
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + run_for;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let base = base.to_owned();
        let token = token.to_owned();
        let make = scenario.make.clone();
        let refusals = scenario.expected_refusals;
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let call = make(worker, n);
                let mut request = client
                    .request(call.method, format!("{base}{}", call.path))
                    .bearer_auth(&token);
                if let Some(body) = &call.body {
                    request = request.json(body);
                }
                if let Some(tag) = &call.if_match {
                    request = request.header("If-Match", tag);
                }
                let sent = Instant::now();
                let result = request.send().await;
                let outcome = match result {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.bytes().await;
                        status
                    }
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                tally
                    .latencies_us
                    .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if refusals.contains(&outcome) {
                    tally.conflicts += 1;
                } else if !outcome.is_success() {
                    tally.errors += 1;
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.expect("worker");
        total.latencies_us.extend(tally.latencies_us);
        total.errors += tally.errors;
        total.conflicts += tally.conflicts;
    }
    (total, started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

async fn json_of(
    client: &Client,
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

async fn bench_backend(
    backend: &str,
    database_url: Option<String>,
    settings: &Settings,
) -> Vec<Measurement> {
    let dir = std::env::temp_dir().join(format!("itsm-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut env = vec![("ITSM_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned())];
    if let Some(url) = database_url {
        env.push(("ITSM_DATABASE_URL", url));
    }
    eprintln!(
        "[{backend}] seeding {} incidents through `itsm seed`...",
        settings.seed_incidents
    );
    // `itsm seed` reports its own time and rate.
    let count = settings.seed_incidents.to_string();
    let target = settings.sla_target_seconds.map(|t| t.to_string());
    let mut seed_args = vec!["seed", "--incidents", count.as_str()];
    if let Some(target) = &target {
        seed_args.extend(["--sla-target-seconds", target.as_str()]);
    }
    let seed_started = Instant::now();
    let seeded = run_itsm(&seed_args, &env, &dir);
    let seed_seconds = seed_started.elapsed().as_secs_f64();
    eprintln!("[{backend}] {}", seeded.trim());
    let plans = run_itsm(&["plans"], &env, &dir);
    let plans_file = bench_output_dir().join(format!("plans-{backend}.txt"));
    std::fs::write(&plans_file, &plans).expect("plans file");
    eprintln!("[{backend}] query plan of each incident list filter:\n{plans}");
    let server = start_server(&env, &dir).await;
    let client = Client::builder()
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let base = server.base.clone();
    let token = json_of(
        &client,
        &base,
        "",
        Method::POST,
        "/api/v1/auth/token",
        Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
    )
    .await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    // Fixtures: a group with the admin in it, 100 hot incidents, a deep cursor.
    let admin_id = json_of(&client, &base, &token, Method::GET, "/api/v1/me", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = json_of(
        &client,
        &base,
        &token,
        Method::POST,
        "/api/v1/groups",
        Some(json!({"name": format!("Bench {}", uuid::Uuid::new_v4().simple())})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    json_of(
        &client,
        &base,
        &token,
        Method::POST,
        &format!("/api/v1/groups/{group}/members"),
        Some(json!({"user_id": admin_id})),
    )
    .await;
    let mut hot = Vec::new();
    for i in 0..100 {
        let incident = json_of(
            &client,
            &base,
            &token,
            Method::POST,
            "/api/v1/incidents",
            Some(json!({"title": format!("hot incident {i}"), "impact": "low", "urgency": "low"})),
        )
        .await;
        let number = incident["number"].as_str().unwrap().to_owned();
        let start = Some(json!({"action": "start"}));
        let path = format!("/api/v1/incidents/{number}/transitions");
        json_of(&client, &base, &token, Method::POST, &path, start).await;
        hot.push(number);
    }
    let mid = json_of(
        &client,
        &base,
        &token,
        Method::GET,
        "/api/v1/incidents?state=in_progress&sort=-created_at&limit=50",
        None,
    )
    .await;
    let middle_time = mid["items"]
        .as_array()
        .and_then(|items| items.last())
        .map(|i| i["created_at"].as_str().unwrap().to_owned());
    let deep_query = match middle_time {
        Some(_) => {
            // Walk 20 pages in, so the cursor points well into the index.
            let mut cursor = mid["next_cursor"].as_str().map(str::to_owned);
            for _ in 0..20 {
                let Some(c) = cursor.clone() else { break };
                let page = json_of(
                    &client,
                    &base,
                    &token,
                    Method::GET,
                    &format!(
                        "/api/v1/incidents?state=in_progress&sort=-created_at&limit=50&cursor={c}"
                    ),
                    None,
                )
                .await;
                cursor = page["next_cursor"].as_str().map(str::to_owned).or(Some(c));
            }
            cursor.map(|c| {
                format!("/api/v1/incidents?state=in_progress&sort=-created_at&limit=50&cursor={c}")
            })
        }
        None => None,
    };
    let seeded = settings.seed_incidents.max(1);

    let versions: Arc<Vec<std::sync::atomic::AtomicI64>> = Arc::new(
        (0..100)
            .map(|_| std::sync::atomic::AtomicI64::new(2))
            .collect(),
    );
    let hot = Arc::new(hot);
    let mut scenarios = vec![
        Scenario {
            name: "create incident",
            make: Arc::new(|worker, n| Call {
                method: Method::POST,
                path: "/api/v1/incidents".into(),
                body: Some(
                    json!({"title": format!("bench incident {worker}-{n}"), "description": "created by the benchmark",
                                  "impact": "medium", "urgency": "high", "category": "network"}),
                ),
                if_match: None,
            }),
            expected_refusals: &[],
        },
        Scenario {
            name: "get incident by number",
            make: Arc::new(move |_, n| {
                Call::get(format!(
                    "/api/v1/incidents/INC{:07}",
                    1 + (n * 7919) % seeded
                ))
            }),
            expected_refusals: &[],
        },
        Scenario {
            name: "list first page (state, sort)",
            make: Arc::new(|_, _| {
                Call::get("/api/v1/incidents?state=in_progress&sort=-created_at&limit=50".into())
            }),
            expected_refusals: &[],
        },
    ];
    if let Some(deep) = deep_query {
        scenarios.push(Scenario {
            name: "list deep page (cursor)",
            make: Arc::new(move |_, _| Call::get(deep.clone())),
            expected_refusals: &[],
        });
    }
    {
        let hot = hot.clone();
        let versions = versions.clone();
        scenarios.push(Scenario {
            name: "patch with If-Match, 100 hot",
            make: Arc::new(move |_, n| {
                let i = (n * 31) % hot.len();
                let version = versions[i].load(Ordering::Relaxed);
                versions[i].fetch_add(1, Ordering::Relaxed);
                Call {
                    method: Method::PATCH,
                    path: format!("/api/v1/incidents/{}", hot[i]),
                    body: Some(json!({"description": format!("edit {n}")})),
                    if_match: Some(format!("\"{version}\"")),
                }
            }),
            expected_refusals: &[StatusCode::PRECONDITION_FAILED],
        });
    }
    scenarios.push(Scenario {
        name: "transition (assign, resolve)",
        make: {
            // Each worker owns one hot incident, in progress, and cycles through assign,
            // resolve and reopen on it, so every request is a valid transition.
            let hot = hot.clone();
            let (assignee, group) = (admin_id.clone(), group.clone());
            let steps: Arc<Vec<AtomicUsize>> =
                Arc::new((0..100).map(|_| AtomicUsize::new(0)).collect());
            Arc::new(move |worker, _| {
                let action = match steps[worker].fetch_add(1, Ordering::Relaxed) % 3 {
                    0 => json!({"action": "assign", "assignee": assignee, "assignment_group": group}),
                    1 => json!({"action": "resolve", "resolution_code": "fixed", "resolution_notes": "bench"}),
                    _ => json!({"action": "reopen"}),
                };
                Call {
                    method: Method::POST,
                    path: format!("/api/v1/incidents/{}/transitions", hot[worker]),
                    body: Some(action),
                    if_match: None,
                }
            })
        },
        expected_refusals: &[],
    });
    scenarios.push(Scenario {
        name: "event feed read",
        make: Arc::new(move |_, n| {
            Call::get(format!(
                "/api/v1/events?after={}&limit=100",
                (n * 104_729) % (seeded * 2)
            ))
        }),
        expected_refusals: &[],
    });

    scenarios.push(alert_storm());

    if let Some(length) = settings.soak {
        soak(&client, &base, &token, &server, backend, scenarios, length).await;
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
        return Vec::new();
    }
    // BENCH_ONLY=word runs only the scenarios whose name contains it (for profiling).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    scenarios.retain(|scenario| scenario.name.contains(only.as_str()));
    let mut results = Vec::new();
    // Hostile loads with a GET by number beside them: its p99 is the figure (goal: 50 ms).
    let probe = Scenario {
        name: "get incident by number",
        make: Arc::new(move |_, n| {
            Call::get(format!(
                "/api/v1/incidents/INC{:07}",
                1 + (n * 7919) % seeded
            ))
        }),
        expected_refusals: &[],
    };
    for (load, concurrency) in [(login_flood(), 64), (search_storm(), 60)] {
        if !load.name.contains(only.as_str()) {
            continue;
        }
        let measurement = beside(
            &client,
            &server,
            &token,
            backend,
            (&load, concurrency),
            &probe,
            settings,
        )
        .await;
        eprintln!("{}", row(&measurement));
        results.push(measurement);
    }
    for scenario in &scenarios {
        for &concurrency in &settings.concurrency {
            drive(
                &client,
                &base,
                &token,
                scenario,
                concurrency,
                settings.warm_up,
            )
            .await;
            server.reset_peak_rss();
            let (mut tally, seconds) = drive(
                &client,
                &base,
                &token,
                scenario,
                concurrency,
                settings.duration,
            )
            .await;
            tally.latencies_us.sort_unstable();
            let measurement = Measurement {
                scenario: scenario.name.into(),
                backend: backend.into(),
                concurrency,
                requests_per_second: tally.latencies_us.len() as f64 / seconds,
                accepted_per_second: (tally.latencies_us.len() - tally.errors - tally.conflicts)
                    as f64
                    / seconds,
                p50_ms: percentile(&tally.latencies_us, 0.50),
                p99_ms: percentile(&tally.latencies_us, 0.99),
                max_ms: percentile(&tally.latencies_us, 1.0),
                errors: tally.errors,
                conflicts: tally.conflicts,
                server_peak_rss_mb: server.peak_rss_mb(),
            };
            eprintln!("{}", row(&measurement));
            results.push(measurement);
        }
    }
    // The table ran before the seeded timers fall due (with a target long enough): its creates
    // measure the timers attached; the alarms come now.
    if let Some(target) = settings.sla_target_seconds {
        let due = SlaWindow {
            first: seed_started + Duration::from_secs_f64(target as f64 * 0.75),
            last: seed_started + Duration::from_secs_f64(target as f64 + seed_seconds + 2.0),
        };
        let create = scenarios.iter().find(|s| s.name == "create incident");
        if let Some(create) = create {
            sla_under_load(&client, &base, &token, create, backend, due).await;
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    results
}

/// Sign-ins with the right password, as fast as `concurrency` clients can send them: each
/// runs a password hash, bounded to one per core; the rest wait in a short queue or get 503.
fn login_flood() -> Scenario {
    Scenario {
        name: "login flood",
        make: Arc::new(|_, _| Call {
            method: Method::POST,
            path: "/api/v1/auth/token".into(),
            body: Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
            if_match: None,
        }),
        expected_refusals: &[
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
        ],
    }
}

/// Word searches for a word in every seeded incident's title, each of which could sort every
/// match: they hold at most half the read connections, for at most the search time limit.
fn search_storm() -> Scenario {
    Scenario {
        name: "search storm",
        make: Arc::new(|_, n| {
            let sort = ["-created_at", "priority", "-updated_at"][n % 3];
            Call::get(format!("/api/v1/incidents?q=issue&sort={sort}&limit=50"))
        }),
        expected_refusals: &[StatusCode::SERVICE_UNAVAILABLE],
    }
}

/// Runs `load` at its concurrency and, beside it, `probe` at concurrency 1; the row reports
/// the probe (its p99 is the figure) and the load's own rate goes to stderr.
async fn beside(
    client: &Client,
    server: &Server,
    token: &str,
    backend: &str,
    (load, concurrency): (&Scenario, usize),
    probe: &Scenario,
    settings: &Settings,
) -> Measurement {
    let base = server.base.as_str();
    let run_for = settings.warm_up + settings.duration;
    let loading = drive(client, base, token, load, concurrency, run_for);
    let probing = async {
        tokio::time::sleep(settings.warm_up).await;
        server.reset_peak_rss();
        drive(client, base, token, probe, 1, settings.duration).await
    };
    let ((mut load_tally, load_seconds), (mut tally, seconds)) = tokio::join!(loading, probing);
    load_tally.latencies_us.sort_unstable();
    tally.latencies_us.sort_unstable();
    eprintln!(
        "[{backend}] {}: {concurrency} clients, {:.0} req/s answered, {} refused (503/429), \
         {} errors, p99 {:.1} ms",
        load.name,
        load_tally.latencies_us.len() as f64 / load_seconds,
        load_tally.conflicts,
        load_tally.errors,
        percentile(&load_tally.latencies_us, 0.99)
    );
    Measurement {
        scenario: format!("GET by number beside {}", load.name),
        backend: backend.into(),
        concurrency: 1,
        requests_per_second: tally.latencies_us.len() as f64 / seconds,
        accepted_per_second: (tally.latencies_us.len() - tally.errors) as f64 / seconds,
        p50_ms: percentile(&tally.latencies_us, 0.50),
        p99_ms: percentile(&tally.latencies_us, 0.99),
        max_ms: percentile(&tally.latencies_us, 1.0),
        errors: tally.errors,
        conflicts: load_tally.conflicts,
        server_peak_rss_mb: server.peak_rss_mb(),
    }
}

/// When the warnings and breaches of the seeded SLA timers fall due.
struct SlaWindow {
    first: Instant,
    last: Instant,
}

/// While the seeded timers' warnings and breaches fall due, `create` runs at concurrency 16
/// (its incidents get timers too); then the lag of each `sla.warning` and `sla.breached` event
/// is read from the feed: the instant the worker noticed it (the event's time) minus the
/// instant it fell due.
async fn sla_under_load(
    client: &Client,
    base: &str,
    token: &str,
    create: &Scenario,
    backend: &str,
    due: SlaWindow,
) {
    let now = Instant::now();
    if due.first > now {
        tokio::time::sleep(due.first - now).await;
    }
    let run_for = due.last.saturating_duration_since(Instant::now());
    let (mut tally, seconds) = drive(client, base, token, create, 16, run_for).await;
    tally.latencies_us.sort_unstable();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut lags_ms: Vec<u32> = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/api/v1/events?types=sla.warning,sla.breached&after={after}&limit=500");
        let page = json_of(client, base, token, Method::GET, &path, None).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let Some(last) = items.last() else { break };
        after = last["sequence"].as_i64().expect("sequence");
        for event in &items {
            let field = match event["type"].as_str() {
                Some("sla.warning") => "warned_at",
                _ => "breached_at",
            };
            let instant = |value: &Value| {
                value
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            };
            if let (Some(noticed), Some(fell_due)) = (
                instant(&event["occurred_at"]),
                instant(&event["data"][field]),
            ) {
                let lag = (noticed - fell_due).num_milliseconds().max(0);
                lags_ms.push(u32::try_from(lag).unwrap_or(u32::MAX));
            }
        }
    }
    lags_ms.sort_unstable();
    let lag = |p: f64| {
        lags_ms
            .get(((lags_ms.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "[{backend}] SLA worker: {} warnings and breaches announced, lag p50 {} ms, p99 {} ms, max {} ms; \
         meanwhile create incident at concurrency 16: {:.0} req/s, p99 {:.2} ms, {} errors",
        lags_ms.len(),
        lag(0.5),
        lag(0.99),
        lag(1.0),
        tally.latencies_us.len() as f64 / seconds,
        percentile(&tally.latencies_us, 0.99),
        tally.errors
    );
}

/// Distinct alert keys of the storm.
const STORM_KEYS: usize = 10_000;

/// An alert storm (issue 16): generic alerts, one per request, 90% of them repeats of a key
/// already sent and 10% a key not seen before, over 10,000 distinct keys (after 100,000
/// requests of a run every key is known and all are repeats). A new key opens an incident
/// (no alert rule: the default handling). Each run (warm-up included) uses keys of its own,
/// so every run starts with new keys.
fn alert_storm() -> Scenario {
    let run = Arc::new(AtomicUsize::new(0));
    Scenario {
        name: "alert storm (90% repeats)",
        make: Arc::new(move |_, n| {
            // `n` starts from 0 in every run: a new run, new keys.
            if n == 0 {
                run.fetch_add(1, Ordering::Relaxed);
            }
            let run = run.load(Ordering::Relaxed);
            let introduced = n / 10;
            let key = if n % 10 == 0 {
                introduced % STORM_KEYS
            } else {
                // A key already introduced in this run, most often a recent one.
                introduced.saturating_sub(1 + (n * 7919) % 97) % STORM_KEYS
            };
            Call {
                method: Method::POST,
                path: "/api/v1/alerts".into(),
                body: Some(json!({
                    "source": "bench",
                    "dedup_key": format!("storm-{run}-{key}"),
                    "severity": "warning",
                    "summary": format!("Storm alert {key}"),
                    "labels": {"alertname": "Storm", "instance": format!("host-{}:9100", key % 500)},
                })),
                if_match: None,
            }
        }),
        // Overload is answered 429 with Retry-After: counted apart from errors.
        expected_refusals: &[StatusCode::TOO_MANY_REQUESTS],
    }
}

/// Every scenario mixed, request by request, at concurrency 16 for `length`, reported minute
/// by minute: requests, errors, p99 and the server's resident memory.
async fn soak(
    client: &Client,
    base: &str,
    token: &str,
    server: &Server,
    backend: &str,
    scenarios: Vec<Scenario>,
    length: Duration,
) {
    let makers: Vec<MakeCall> = scenarios.iter().map(|s| s.make.clone()).collect();
    let mixed = Scenario {
        name: "mixed",
        make: Arc::new(move |worker, n| makers[n % makers.len()](worker, n)),
        expected_refusals: &[StatusCode::PRECONDITION_FAILED],
    };
    let start_rss = server.rss_mb();
    println!(
        "\nsoak, {backend}, concurrency 16, {} s; RSS at start {start_rss:.1} MB",
        length.as_secs()
    );
    println!("| minute | requests | req/s | errors | conflicts | p99 ms | RSS MB |");
    println!("|---|---|---|---|---|---|---|");
    let started = Instant::now();
    let mut minute = 0;
    let mut errors = 0;
    while started.elapsed() < length {
        minute += 1;
        let window = (length - started.elapsed()).min(Duration::from_secs(60));
        let (mut tally, seconds) = drive(client, base, token, &mixed, 16, window).await;
        tally.latencies_us.sort_unstable();
        errors += tally.errors;
        println!(
            "| {minute} | {} | {:.0} | {} | {} | {:.2} | {:.1} |",
            tally.latencies_us.len(),
            tally.latencies_us.len() as f64 / seconds,
            tally.errors,
            tally.conflicts,
            percentile(&tally.latencies_us, 0.99),
            server.rss_mb()
        );
    }
    let end_rss = server.rss_mb();
    println!(
        "soak, {backend}: {errors} errors; RSS {start_rss:.1} MB at start, {end_rss:.1} MB at the end ({:+.1}%)",
        (end_rss - start_rss) / start_rss.max(0.1) * 100.0
    );
}

fn row(m: &Measurement) -> String {
    format!(
        "| {:<30} | {:<8} | {:>4} | {:>9.0} | {:>9.0} | {:>7.2} | {:>7.2} | {:>8.2} | {:>6} | {:>9} | {:>7.1} |",
        m.scenario, m.backend, m.concurrency, m.requests_per_second, m.accepted_per_second, m.p50_ms, m.p99_ms, m.max_ms, m.errors, m.conflicts,
        m.server_peak_rss_mb
    )
}

#[tokio::main]
async fn main() {
    let settings = Settings::from_env();
    // BENCH_SKIP_SQLITE=1 measures PostgreSQL alone (its seeding is the slow part of a run).
    let mut results = Vec::new();
    if !std::env::var("BENCH_SKIP_SQLITE").is_ok_and(|v| v == "1") {
        results.extend(bench_backend("sqlite", None, &settings).await);
    }
    match std::env::var("ITSM_BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            // A fresh schema, so the run starts from an empty database like the SQLite one.
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let admin = Command::new("psql")
                .args([url.as_str(), "-qc", &format!("CREATE SCHEMA {schema}")])
                .status();
            assert!(
                admin.is_ok_and(|s| s.success()),
                "cannot create schema {schema} (is psql installed?)"
            );
            let separator = if url.contains('?') { '&' } else { '?' };
            let scoped = format!("{url}{separator}options=-csearch_path%3D{schema}");
            results.extend(bench_backend("postgres", Some(scoped), &settings).await);
            let _ = Command::new("psql")
                .args([
                    url.as_str(),
                    "-qc",
                    &format!("DROP SCHEMA {schema} CASCADE"),
                ])
                .status();
        }
        _ => eprintln!("ITSM_BENCH_POSTGRES_URL is not set: PostgreSQL not measured"),
    }
    if settings.soak.is_some() {
        return;
    }
    println!(
        "\nmode: {}, seeded incidents: {}",
        if settings.quick { "quick" } else { "full" },
        settings.seed_incidents
    );
    println!(
        "| {:<30} | {:<8} | {:>4} | {:>9} | {:>9} | {:>7} | {:>7} | {:>8} | {:>6} | {:>9} | {:>7} |",
        "scenario",
        "backend",
        "conc",
        "req/s",
        "2xx/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "conflicts",
        "RSS MB"
    );
    println!("|{}|", "-".repeat(140));
    for m in &results {
        println!("{}", row(m));
    }
    std::fs::write(
        bench_output_dir().join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .expect("results.json");
    println!(
        "\nwritten to target/bench/results.json; the query plans of the list filters to \
         target/bench/plans-<backend>.txt"
    );
}
