//! `make bench-cmdb`: the CMDB benchmark of issue 14. Starts the release `itsm` binary on a
//! fresh database (SQLite, and PostgreSQL when ITSM_BENCH_POSTGRES_URL is set), seeds a
//! layered graph through the reconciliation endpoint (the bulk path), then measures at
//! concurrency 16: impact analysis upstream from storage arrays and downstream from business
//! services at depth 6, and reconciliation of 1,000-item batches. It prints one table and
//! writes it to target/bench/cmdb-results.json.
//!
//! The graph (for 100,000 items): 1,000 business services depend on applications (18 each);
//! 9,000 applications depend on databases (2) and run on virtual machines (8); 10,000
//! databases run on virtual machines (2), and one in a hundred uses an application back (a
//! cycle, added last); 52,500 virtual machines are hosted on servers and use storage (2); 20,000 servers
//! use storage (8) and connect to network devices (4); 5,000 network devices, 2,500 storage
//! arrays (so that a walk upstream from one touches more than 1,000 items). About 523,000
//! relationships.
//!
//! Then change conflicts (issue 17): 10,000 standard changes scheduled over a year on 20 of
//! the graph's databases and the applications that depend on them, and 50 freeze windows, and `GET /changes/{id}/conflicts`
//! at concurrency 16 (BENCH_SKIP_CHANGES=1 leaves it out).
//!
//! BENCH_CMDB_ITEMS=N scales the graph (default 100,000; BENCH_QUICK=1: 10,000);
//! BENCH_SKIP_SQLITE=1 measures PostgreSQL alone; BENCH_KEEP_SCHEMA=1 keeps its schema to look into.
//! BENCH_SERVER_LOG sets the server's `RUST_LOG` (default `warn`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN_PASSWORD: &str = "bench-admin-password";
const CONCURRENCY: usize = 16;
const DEPTH: u32 = 6;

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
    fn peak_rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

async fn start_server(env: &[(&str, String)], dir: &std::path::Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let exe = std::env::current_exe()
        .expect("current exe")
        .with_file_name("itsm");
    let child = Command::new(exe)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("ITSM_BIND", format!("127.0.0.1:{port}"))
        // BENCH_SERVER_LOG sets the server's RUST_LOG (its log goes to the bench's stderr).
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("start itsm");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = Client::new();
    for _ in 0..400 {
        if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await {
            if response.status() == StatusCode::OK {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not become ready");
}

/// One layer of the graph: its class, identifying attribute and size.
struct Layer {
    class: &'static str,
    prefix: &'static str,
    count: usize,
}

impl Layer {
    fn attributes(&self, n: usize) -> Value {
        let id = format!("{}{n}", self.prefix);
        match self.class {
            "business_service" => json!({"service_code": id}),
            "application" => json!({"app_id": id}),
            "database" => json!({"instance_name": id, "host": "h"}),
            "virtual_machine" => json!({"vm_uuid": id}),
            _ => json!({"serial_number": id}),
        }
    }
}

/// A deterministic pseudo-random number for edge `k` of item `n` of a layer.
fn pick(n: usize, k: usize, salt: usize, modulo: usize) -> usize {
    let mut x = (n as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add((k as u64 + 1).wrapping_mul(1442695040888963407))
        .wrapping_add(salt as u64);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    (x % modulo as u64) as usize
}

const SVC: usize = 0;
const APP: usize = 1;
const DB: usize = 2;
const VM: usize = 3;
const HOST: usize = 4;
const NET: usize = 5;
const STORAGE: usize = 6;

fn layers(items: usize) -> Vec<Layer> {
    let part = |share: usize| (items * share / 100_000).max(1);
    vec![
        Layer {
            class: "business_service",
            prefix: "S",
            count: part(1_000),
        },
        Layer {
            class: "application",
            prefix: "A",
            count: part(9_000),
        },
        Layer {
            class: "database",
            prefix: "D",
            count: part(10_000),
        },
        Layer {
            class: "virtual_machine",
            prefix: "V",
            count: part(52_500),
        },
        Layer {
            class: "server",
            prefix: "H",
            count: part(20_000),
        },
        Layer {
            class: "network_device",
            prefix: "N",
            count: part(5_000),
        },
        Layer {
            class: "storage",
            prefix: "T",
            count: part(2_500),
        },
    ]
}

/// The relationships leaving item `n` of layer `from`: (type, layer, index).
fn edges(layers: &[Layer], from: usize, n: usize) -> Vec<(&'static str, usize, usize)> {
    let to = |layer: usize, k: usize, kind: &'static str| {
        (
            kind,
            layer,
            pick(n, k, from * 31 + layer, layers[layer].count),
        )
    };
    let mut out = Vec::new();
    match from {
        SVC => out.extend((0..18).map(|k| to(APP, k, "depends_on"))),
        APP => {
            out.extend((0..2).map(|k| to(DB, k, "depends_on")));
            out.extend((0..8).map(|k| to(VM, k + 2, "runs_on")));
        }
        DB => out.extend((0..2).map(|k| to(VM, k, "runs_on"))),
        VM => {
            out.push(to(HOST, 0, "hosted_on"));
            out.extend((0..2).map(|k| to(STORAGE, k + 1, "uses")));
        }
        HOST => {
            out.extend((0..8).map(|k| to(STORAGE, k, "uses")));
            out.extend((0..4).map(|k| to(NET, k + 8, "connected_to")));
        }
        _ => {}
    }
    out.sort();
    out.dedup();
    out
}

async fn post(client: &Client, base: &str, token: &str, path: &str, body: &Value) -> Value {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

/// Seeds the graph, targets first, through reconciliation batches of at most 1,000 items; a
/// batch carries its new items and, to relate them, the existing items they point at.
async fn seed(
    client: &Client,
    base: &str,
    token: &str,
    layers: &[Layer],
) -> (Vec<Vec<String>>, usize) {
    let mut ids: Vec<Vec<String>> = layers
        .iter()
        .map(|l| vec![String::new(); l.count])
        .collect();
    let mut relationships = 0;
    for from in (0..layers.len()).rev() {
        let mut n = 0;
        while n < layers[from].count {
            let mut items = Vec::new();
            let mut keys: HashMap<(usize, usize), String> = HashMap::new();
            let mut rels = Vec::new();
            let mut owners = Vec::new();
            while n < layers[from].count {
                let out = edges(layers, from, n);
                let new_targets = out
                    .iter()
                    .filter(|(_, l, i)| !keys.contains_key(&(*l, *i)))
                    .count();
                if !items.is_empty() && items.len() + 1 + new_targets > 1000 {
                    break;
                }
                let key = format!("{from}:{n}");
                items.push(json!({"key": key, "class": layers[from].class,
                                  "name": format!("{}-{n}", layers[from].class),
                                  "attributes": layers[from].attributes(n)}));
                owners.push((from, n));
                keys.insert((from, n), key.clone());
                for (kind, layer, index) in out {
                    let target = keys.entry((layer, index)).or_insert_with(|| {
                        let key = format!("{layer}:{index}");
                        items.push(json!({"key": key, "class": layers[layer].class,
                                          "attributes": layers[layer].attributes(index)}));
                        owners.push((layer, index));
                        key
                    });
                    rels.push(json!({"source": key, "type": kind, "target": target}));
                }
                n += 1;
            }
            relationships += rels.len();
            let report = post(
                client,
                base,
                token,
                "/api/v1/configuration-items/reconcile",
                &json!({"source": "bench", "items": items, "relationships": rels}),
            )
            .await;
            let summary = &report["summary"];
            assert_eq!(
                summary["conflict"].as_u64().unwrap_or(1)
                    + summary["invalid"].as_u64().unwrap_or(1),
                0,
                "{summary}"
            );
            for (result, (layer, index)) in report["results"].as_array().unwrap().iter().zip(owners)
            {
                ids[layer][index] = result["id"].as_str().unwrap().to_owned();
            }
        }
        eprintln!(
            "  seeded {} {} items",
            layers[from].count, layers[from].class
        );
    }
    // Cycles: one database in a hundred uses an application back (once both exist).
    let cycles: Vec<usize> = (0..layers[DB].count).step_by(100).collect();
    for chunk in cycles.chunks(400) {
        let mut items = Vec::new();
        let mut rels = Vec::new();
        for &n in chunk {
            let app = pick(n, 9, 7, layers[APP].count);
            items.push(json!({"key": format!("d{n}"), "class": "database", "attributes": layers[DB].attributes(n)}));
            items.push(json!({"key": format!("a{n}"), "class": "application", "attributes": layers[APP].attributes(app)}));
            rels.push(
                json!({"source": format!("d{n}"), "type": "uses", "target": format!("a{n}")}),
            );
        }
        relationships += rels.len();
        post(
            client,
            base,
            token,
            "/api/v1/configuration-items/reconcile",
            &json!({"source": "bench", "items": items, "relationships": rels}),
        )
        .await;
    }
    (ids, relationships)
}

#[derive(Debug, serde::Serialize)]
struct Measurement {
    scenario: String,
    backend: String,
    requests: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: usize,
    /// Mean items in an impact answer, or items per reconciliation batch.
    mean_items: f64,
    server_peak_rss_mb: f64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    f64::from(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]) / 1000.0
}

type Request = Arc<dyn Fn(usize) -> (String, Option<Value>) + Send + Sync>;

/// The lists an answer is counted by, read without building them: the load generator runs on
/// the same cores as the server, and building a `Value` of a 400 KB impact answer cost it
/// more than the server spent on the walk.
#[derive(serde::Deserialize)]
struct Counted {
    items: Option<Vec<serde::de::IgnoredAny>>,
    conflicts: Option<Vec<serde::de::IgnoredAny>>,
    results: Option<Vec<serde::de::IgnoredAny>>,
}

/// Which list of an answer [`drive`] counts.
#[derive(Clone, Copy)]
enum Count {
    Items,
    Conflicts,
    Results,
    Nothing,
}

impl Count {
    fn of(self, body: &[u8]) -> Option<usize> {
        let counted: Counted = serde_json::from_slice(body).ok()?;
        let list = match self {
            Count::Items => counted.items,
            Count::Conflicts => counted.conflicts,
            Count::Results => counted.results,
            Count::Nothing => return Some(0),
        };
        Some(list.map_or(0, |l| l.len()))
    }
}

/// Runs `requests` calls at `CONCURRENCY`; `count` reads the item count of an answer.
async fn drive(
    client: &Client,
    base: &str,
    token: &str,
    requests: usize,
    make: Request,
    count: Count,
) -> (Vec<u32>, usize, usize, f64) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, base, token, make, next) = (
            client.clone(),
            base.to_owned(),
            token.to_owned(),
            make.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut items) = (Vec::new(), 0, 0);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    break;
                }
                let (path, body) = make(n);
                let request = match &body {
                    Some(body) => client.post(format!("{base}{path}")).json(body),
                    None => client.get(format!("{base}{path}")),
                };
                let sent = Instant::now();
                match request.bearer_auth(&token).send().await {
                    Ok(response) if response.status().is_success() => {
                        match response.bytes().await.ok().and_then(|b| count.of(&b)) {
                            Some(n) => items += n,
                            None => errors += 1,
                        }
                    }
                    _ => errors += 1,
                }
                latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            (latencies, errors, items)
        }));
    }
    let (mut all, mut errors, mut items) = (Vec::new(), 0, 0);
    for task in tasks {
        let (latencies, e, i) = task.await.expect("worker");
        all.extend(latencies);
        errors += e;
        items += i;
    }
    all.sort_unstable();
    (all, errors, items, started.elapsed().as_secs_f64())
}

async fn bench_backend(backend: &str, url: Option<String>, items: usize) -> Vec<Measurement> {
    let dir =
        std::env::temp_dir().join(format!("itsm-cmdb-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut env = vec![("ITSM_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned())];
    if let Some(url) = url {
        env.push(("ITSM_DATABASE_URL", url));
    }
    let server = start_server(&env, &dir).await;
    let client = Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let base = server.base.clone();
    let token = post(
        &client,
        &base,
        "",
        "/api/v1/auth/token",
        &json!({"username": "admin", "password": ADMIN_PASSWORD}),
    )
    .await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let layers = layers(items);
    eprintln!("[{backend}] seeding {items} items through reconciliation...");
    let started = Instant::now();
    let (ids, relationships) = seed(&client, &base, &token, &layers).await;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "[{backend}] seeded {items} items and {relationships} relationships in {seconds:.1} s"
    );
    let mut results = vec![Measurement {
        scenario: format!("seed {relationships} relationships"),
        backend: backend.into(),
        requests: 0,
        per_second: (items + relationships) as f64 / seconds,
        p50_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
        errors: 0,
        mean_items: 0.0,
        server_peak_rss_mb: server.peak_rss_mb(),
    }];
    let impact_count = Count::Items;
    let storage = Arc::new(ids[STORAGE].clone());
    let services = Arc::new(ids[SVC].clone());
    let scenarios: Vec<(&str, Request)> =
        vec![
            (
                "impact upstream from storage",
                Arc::new(move |n| {
                    (
                        format!(
            "/api/v1/configuration-items/{}/impact?direction=upstream&depth={DEPTH}",
            storage[pick(n, 0, 7, storage.len())]),
                        None,
                    )
                }),
            ),
            (
                "impact downstream from service",
                Arc::new(move |n| {
                    (
                        format!(
            "/api/v1/configuration-items/{}/impact?direction=downstream&depth={DEPTH}",
            services[pick(n, 0, 9, services.len())]),
                        None,
                    )
                }),
            ),
        ];
    let requests = if items >= 100_000 { 800 } else { 400 };
    for (name, make) in scenarios {
        // Warm-up for five seconds at least: the first walk after the seeding finds the node's
        // in-memory copy of the graph out of date and starts a build, which takes seconds
        // (walks read the database meanwhile); the figures are those of the steady state.
        let warming = Instant::now();
        while warming.elapsed() < Duration::from_secs(5) {
            drive(&client, &base, &token, 32, make.clone(), impact_count).await;
        }
        let (latencies, errors, touched, elapsed) =
            drive(&client, &base, &token, requests, make, impact_count).await;
        results.push(Measurement {
            scenario: name.into(),
            backend: backend.into(),
            requests,
            per_second: requests as f64 / elapsed,
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: percentile(&latencies, 1.0),
            errors,
            mean_items: touched as f64 / requests as f64,
            server_peak_rss_mb: server.peak_rss_mb(),
        });
    }
    if !std::env::var("BENCH_SKIP_CHANGES").is_ok_and(|v| v == "1") {
        let changes = bench_changes(&client, &base, &token, backend, &layers, &ids, &server);
        results.extend(changes.await);
    }
    // Reconciliation: batches of 1,000 existing virtual machines, each round with a new value.
    let vm_layer = &layers[VM];
    let batch_count = (vm_layer.count / 1000).clamp(1, 32);
    let batch_count_items = vm_layer.count.min(1000);
    let reconcile_count = Count::Results;
    for (name, round) in [
        ("reconcile 1,000 updated", 1),
        ("reconcile 1,000 unchanged", 1),
    ] {
        let prefix = vm_layer.prefix;
        let make: Request = Arc::new(move |n| {
            let items: Vec<Value> = (0..batch_count_items)
                .map(|i| {
                    let index = (n % batch_count) * 1000 + i;
                    json!({"class": "virtual_machine",
                           "attributes": {"vm_uuid": format!("{prefix}{index}"), "os": format!("os-{round}")}})
                })
                .collect();
            (
                "/api/v1/configuration-items/reconcile".to_owned(),
                Some(json!({"source": "discovery", "items": items})),
            )
        });
        let (latencies, errors, reconciled, elapsed) =
            drive(&client, &base, &token, batch_count, make, reconcile_count).await;
        results.push(Measurement {
            scenario: name.into(),
            backend: backend.into(),
            requests: batch_count,
            per_second: reconciled as f64 / elapsed,
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: percentile(&latencies, 1.0),
            errors,
            mean_items: reconciled as f64 / batch_count as f64,
            server_peak_rss_mb: server.peak_rss_mb(),
        });
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    results
}

/// Scheduled changes seeded over the year (BENCH_CHANGES=N for another count), and freeze
/// windows.
const CHANGES_SCHEDULED: usize = 10_000;
const FREEZE_WINDOWS: usize = 50;

/// Change conflicts (issue 17 item 9): 10,000 standard changes scheduled over a year on
/// 20 databases of the graph and the applications that depend on them, 50 one-day freeze
/// windows on business services (on days no change was seeded into), then `GET /changes/{id}/conflicts` for random
/// scheduled changes at concurrency 16: the CMDB walks up and down from its items, the
/// overlapping changes and the freeze windows hit.
async fn bench_changes(
    client: &Client,
    base: &str,
    token: &str,
    backend: &str,
    layers: &[Layer],
    ids: &[Vec<String>],
    server: &Server,
) -> Vec<Measurement> {
    let scheduled = std::env::var("BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(CHANGES_SCHEDULED);
    // A standard change template over a pool of items, so that changes skip authorisation:
    // 20 databases and the applications that depend on them, so that overlapping changes
    // conflict through the CMDB as well as on the same item.
    let databases = 20.min(ids[DB].len());
    let dependants = (0..ids[APP].len()).filter(|&app| {
        edges(layers, APP, app)
            .iter()
            .any(|&(_, layer, db)| layer == DB && db < databases)
    });
    let pool: Vec<String> = ids[DB][..databases]
        .iter()
        .chain(dependants.map(|app| &ids[APP][app]))
        .cloned()
        .collect();
    let template = post(
        client,
        base,
        token,
        "/api/v1/standard-change-templates",
        &json!({"name": "Bench patch", "risk_cap": "very_high", "configuration_items": pool,
                "fields": {"backout_plan": "Roll back the package"}}),
    )
    .await["id"]
        .as_str()
        .expect("template id")
        .to_owned();
    let day = |n: usize| -> usize {
        let d = pick(n, 1, 11, 365);
        // Freeze days are 7k + 3: changes are seeded around them.
        if d % 7 == 3 {
            d + 1
        } else {
            d
        }
    };
    let base_time = chrono::Utc::now() + chrono::Duration::days(1);
    let window = move |n: usize| {
        let start = base_time
            + chrono::Duration::days(day(n) as i64)
            + chrono::Duration::hours(pick(n, 2, 13, 20) as i64);
        let end = start + chrono::Duration::hours(1 + pick(n, 3, 17, 4) as i64);
        (start.to_rfc3339(), end.to_rfc3339())
    };
    for k in 0..FREEZE_WINDOWS {
        let start = base_time + chrono::Duration::days((7 * k + 3) as i64);
        let end = start + chrono::Duration::days(1);
        let services: Vec<&String> = (0..3)
            .map(|i| &ids[SVC][pick(k, i, 19, ids[SVC].len())])
            .collect();
        post(
            client,
            base,
            token,
            "/api/v1/change-freeze-windows",
            &json!({"name": format!("freeze {k}"), "reason": "bench", "start": start.to_rfc3339(),
                    "end": end.to_rfc3339(), "scope": {"services": services}}),
        )
        .await;
    }
    eprintln!("[{backend}] seeding {scheduled} scheduled changes...");
    let started = Instant::now();
    let pool = Arc::new(pool);
    let (pool_of, template_of) = (pool.clone(), template.clone());
    let create: Request = Arc::new(move |n| {
        let (start, end) = window(n);
        let first = &pool_of[pick(n, 4, 23, pool_of.len())];
        let second = &pool_of[pick(n, 5, 29, pool_of.len())];
        let mut items = vec![first.clone()];
        if second != first && n % 3 == 0 {
            items.push(second.clone());
        }
        (
            "/api/v1/changes".to_owned(),
            Some(
                json!({"type": "standard", "template": template_of, "title": format!("Patch {n}"),
                        "configuration_items": items, "planned_start": start, "planned_end": end}),
            ),
        )
    });
    let none = Count::Nothing;
    let (_, create_errors, _, _) = drive(client, base, token, scheduled, create, none).await;
    let schedule: Request = Arc::new(|n| {
        (
            format!("/api/v1/changes/CHG{:07}/transitions", n + 1),
            Some(json!({"action": "schedule"})),
        )
    });
    let (_, schedule_errors, _, _) = drive(client, base, token, scheduled, schedule, none).await;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "[{backend}] seeded {scheduled} changes in {seconds:.1} s \
         ({create_errors} create and {schedule_errors} schedule errors)"
    );
    let conflicts: Request = Arc::new(move |n| {
        (
            format!(
                "/api/v1/changes/CHG{:07}/conflicts",
                pick(n, 6, 31, scheduled) + 1
            ),
            None,
        )
    });
    let conflict_count = Count::Conflicts;
    let requests = 2_000;
    drive(client, base, token, 64, conflicts.clone(), conflict_count).await;
    let (latencies, errors, found, elapsed) =
        drive(client, base, token, requests, conflicts, conflict_count).await;
    eprintln!("[{backend}] {found} conflicts listed in {requests} answers");
    vec![Measurement {
        scenario: format!("change conflicts ({scheduled} scheduled)"),
        backend: backend.into(),
        requests,
        per_second: requests as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: percentile(&latencies, 1.0),
        errors: errors + create_errors + schedule_errors,
        mean_items: found as f64 / requests as f64,
        server_peak_rss_mb: server.peak_rss_mb(),
    }]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let items = std::env::var("BENCH_CMDB_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 10_000 } else { 100_000 });
    let mut results = Vec::new();
    if !std::env::var("BENCH_SKIP_SQLITE").is_ok_and(|v| v == "1") {
        results.extend(bench_backend("sqlite", None, items).await);
    }
    match std::env::var("ITSM_BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let created = Command::new("psql")
                .args([url.as_str(), "-qc", &format!("CREATE SCHEMA {schema}")])
                .status();
            assert!(
                created.is_ok_and(|s| s.success()),
                "cannot create schema {schema} (is psql installed?)"
            );
            let separator = if url.contains('?') { '&' } else { '?' };
            let scoped = format!("{url}{separator}options=-csearch_path%3D{schema}");
            results.extend(bench_backend("postgres", Some(scoped), items).await);
            if std::env::var("BENCH_KEEP_SCHEMA").is_ok_and(|v| v == "1") {
                eprintln!("kept the PostgreSQL schema {schema}");
            } else {
                let _ = Command::new("psql")
                    .args([
                        url.as_str(),
                        "-qc",
                        &format!("DROP SCHEMA {schema} CASCADE"),
                    ])
                    .status();
            }
        }
        _ => eprintln!("ITSM_BENCH_POSTGRES_URL is not set: PostgreSQL not measured"),
    }
    println!("\nCMDB, {items} items, concurrency {CONCURRENCY}, impact depth {DEPTH}");
    println!(
        "| {:<32} | {:<8} | {:>5} | {:>10} | {:>8} | {:>8} | {:>8} | {:>6} | {:>8} | {:>7} |",
        "scenario",
        "backend",
        "reqs",
        "per s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "items",
        "RSS MB"
    );
    for m in &results {
        println!("| {:<32} | {:<8} | {:>5} | {:>10.0} | {:>8.1} | {:>8.1} | {:>8.1} | {:>6} | {:>8.0} | {:>7.0} |",
                 m.scenario, m.backend, m.requests, m.per_second, m.p50_ms, m.p99_ms, m.max_ms, m.errors,
                 m.mean_items, m.server_peak_rss_mb);
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(
        out.join("cmdb-results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .expect("results");
}
