//! Faults under load, against the real `itsm` process: a write storm on SQLite of every kind at
//! once, PostgreSQL stopped and started again, and the disk under SQLite filling up. Whatever
//! happens, a 2xx means committed with its audit entry and event, an outage answers 503
//! problems with `Retry-After` (never a 500 nor the storage's own text), and the service
//! recovers by itself.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use itsm_integration_tests::reqwest::{Client, Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{Backend, RealServer, ScratchDatabase};

/// A signed-in client of one server.
#[derive(Clone)]
struct Api {
    client: Client,
    base: String,
    token: String,
}

/// One answer, with what a client needs to judge an outage.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
    text: String,
    content_type: String,
    retry_after: Option<String>,
    elapsed: Duration,
}

impl Api {
    async fn of(server: &RealServer) -> Api {
        Api {
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: server.base.clone(),
            token: server.admin_token().await,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Answer {
        let started = Instant::now();
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(version) = if_match {
            request = request.header("If-Match", version);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let text = response.text().await.unwrap_or_default();
        Answer {
            status,
            body: itsm_integration_tests::serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            content_type,
            retry_after,
            elapsed: started.elapsed(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let answer = self.send(Method::GET, path, None, None).await;
        assert_eq!(answer.status, StatusCode::OK, "GET {path}: {}", answer.text);
        answer.body
    }

    /// Every item of a list, following `next_cursor`.
    async fn list_all(&self, path: &str) -> Vec<Value> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{path}{separator}limit=500");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.get(&url).await;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }
}

/// What the service acknowledged for one incident.
#[derive(Debug, Clone, Default)]
struct Acknowledged {
    id: String,
    number: String,
    description: Option<String>,
    note: Option<String>,
}

/// Nothing half-written and nothing acknowledged lost: the event feed counts from 1 without a
/// gap; every stored incident has its `incident.created` event and its `create` audit entry,
/// and every such event and entry names a stored incident; every acknowledged create, PATCH
/// and note is there. Returns the number of incidents stored.
async fn assert_whole(api: &Api, acknowledged: &[Acknowledged]) -> usize {
    let mut created_events = HashSet::new();
    let mut expected = 1;
    loop {
        let page = api
            .get(&format!("/api/v1/events?after={}&limit=500", expected - 1))
            .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for event in items {
            assert_eq!(event["sequence"], expected, "a gap in the feed: {event}");
            expected += 1;
            if event["type"] == "incident.created" {
                created_events.insert(event["entity_id"].as_str().unwrap().to_owned());
            }
        }
    }
    let created_audit: HashSet<String> = api
        .list_all("/api/v1/audit-events?entity_type=incident")
        .await
        .into_iter()
        .filter(|entry| entry["action"] == "create")
        .map(|entry| entry["entity_id"].as_str().unwrap().to_owned())
        .collect();
    let stored: HashMap<String, Value> = api
        .list_all("/api/v1/incidents")
        .await
        .into_iter()
        .map(|incident| (incident["id"].as_str().unwrap().to_owned(), incident))
        .collect();
    let stored_ids: HashSet<String> = stored.keys().cloned().collect();
    assert_eq!(
        created_events, stored_ids,
        "incidents and their created events differ"
    );
    assert_eq!(
        created_audit, stored_ids,
        "incidents and their create audit entries differ"
    );
    for ack in acknowledged {
        let incident = stored
            .get(&ack.id)
            .unwrap_or_else(|| panic!("acknowledged {} is lost", ack.number));
        if let Some(description) = &ack.description {
            assert_eq!(incident["description"], description.as_str(), "{ack:?}");
        }
        if let Some(note) = &ack.note {
            let notes = api
                .get(&format!("/api/v1/incidents/{}/notes?limit=500", ack.id))
                .await;
            let bodies: Vec<&str> = notes["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n["body"].as_str())
                .collect();
            assert!(bodies.contains(&note.as_str()), "{ack:?}: {notes}");
        }
        if ack.description.is_some() {
            let history = api
                .get(&format!(
                    "/api/v1/incidents/{}/history?limit=500",
                    ack.number
                ))
                .await;
            let patched = history["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|entry| entry["changes"].get("description").is_some());
            assert!(patched, "{ack:?}: no audit entry of its PATCH: {history}");
        }
    }
    stored.len()
}

// ---------------------------------------------------------------------------------------------
// 1(c) SQLite under a write storm
// ---------------------------------------------------------------------------------------------

/// A storm answer is a 2xx, or a 409/412 the request asked for: never a 5xx, and never the
/// storage's own words.
fn assert_storm_answer(what: &str, answer: &Answer) -> bool {
    let expected = answer.status.is_success()
        || answer.status == StatusCode::CONFLICT
        || answer.status == StatusCode::PRECONDITION_FAILED;
    assert!(
        expected && !answer.text.contains("locked"),
        "{what}: {} {}",
        answer.status,
        answer.text
    );
    answer.status.is_success()
}

/// Counts of the storm's answers by status.
type Tally = HashMap<u16, usize>;

/// 40 clients write at once on SQLite, of every kind: creates, PATCHes (fresh, stale with
/// `If-Match`, and unconditional ones on incidents every client shares), transitions that
/// race each other, notes; 8 more read one incident, lists, the feed and the audit trail;
/// and the automatic-closure and SLA jobs write in the background. Every answer is a 2xx,
/// 409 or 412, and what was acknowledged is stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_write_storm_never_answers_500_or_locked() {
    let database = ScratchDatabase::new(Backend::Sqlite).unwrap();
    let server = RealServer::start_with(
        &database.url,
        &[
            ("ITSM_WORKERS", "4"),
            ("ITSM_AUTO_CLOSE_AFTER_SECONDS", "1"),
            ("ITSM_JOB_INTERVAL_SECONDS", "1"),
            ("ITSM_SLA_INTERVAL_MS", "50"),
        ],
    )
    .await;
    let api = Api::of(&server).await;
    // Incidents every client writes to at once.
    let mut shared = Vec::new();
    for n in 0..4 {
        let answer = api
            .send(
                Method::POST,
                "/api/v1/incidents",
                Some(json!({"title": format!("Shared {n}")})),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        shared.push(answer.body["id"].as_str().unwrap().to_owned());
    }
    let shared = Arc::new(shared);
    let deadline = Instant::now() + Duration::from_secs(6);

    let writers: Vec<_> = (0..40)
        .map(|writer| {
            let (api, shared) = (api.clone(), shared.clone());
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut acknowledged = Vec::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    n += 1;
                    let one_of_shared = &shared[(writer + n) % shared.len()];
                    let shared_path = format!("/api/v1/incidents/{one_of_shared}");
                    let create = api
                        .send(
                            Method::POST,
                            "/api/v1/incidents",
                            Some(json!({"title": format!("Storm {writer}.{n}")})),
                            None,
                        )
                        .await;
                    *tally.entry(create.status.as_u16()).or_default() += 1;
                    assert_eq!(create.status, StatusCode::CREATED, "{}", create.text);
                    let mut ack = Acknowledged {
                        id: create.body["id"].as_str().unwrap().to_owned(),
                        number: create.body["number"].as_str().unwrap().to_owned(),
                        ..Acknowledged::default()
                    };
                    let own = format!("/api/v1/incidents/{}", ack.id);
                    let description = format!("Described {writer}.{n}");
                    let steps: Vec<(&str, Method, String, Value, Option<&str>)> = vec![
                        (
                            "PATCH own",
                            Method::PATCH,
                            own.clone(),
                            json!({"description": description}),
                            Some("\"1\""),
                        ),
                        (
                            "stale PATCH of a shared one",
                            Method::PATCH,
                            shared_path.clone(),
                            json!({"description": format!("Stale {writer}.{n}")}),
                            Some("\"1\""),
                        ),
                        (
                            "PATCH of a shared one",
                            Method::PATCH,
                            shared_path.clone(),
                            json!({"urgency": (["low", "medium", "high"][n % 3])}),
                            None,
                        ),
                        (
                            "note on own",
                            Method::POST,
                            format!("{own}/notes"),
                            json!({"body": format!("Note {writer}.{n}")}),
                            None,
                        ),
                        (
                            "note on a shared one",
                            Method::POST,
                            format!("{shared_path}/notes"),
                            json!({"body": format!("Shared note {writer}.{n}")}),
                            None,
                        ),
                        (
                            "start own",
                            Method::POST,
                            format!("{own}/transitions"),
                            json!({"action": "start"}),
                            None,
                        ),
                        (
                            "race on a shared one",
                            Method::POST,
                            format!("{shared_path}/transitions"),
                            json!({"action": (["start", "hold", "resume"][n % 3]),
                                   "on_hold_reason": "awaiting_caller"}),
                            None,
                        ),
                        (
                            "resolve own",
                            Method::POST,
                            format!("{own}/transitions"),
                            json!({"action": "resolve", "resolution_code": "fixed",
                                   "resolution_notes": "Storm over"}),
                            None,
                        ),
                    ];
                    for (what, method, path, body, if_match) in steps {
                        let answer = api.send(method, &path, Some(body), if_match).await;
                        *tally.entry(answer.status.as_u16()).or_default() += 1;
                        let succeeded = assert_storm_answer(what, &answer);
                        match what {
                            "PATCH own" if succeeded => {
                                ack.description = Some(description.clone());
                            }
                            "note on own" if succeeded => {
                                ack.note = answer.body["body"].as_str().map(str::to_owned);
                            }
                            _ => {}
                        }
                    }
                    acknowledged.push(ack);
                }
                (tally, acknowledged)
            })
        })
        .collect();
    let readers: Vec<_> = (0..8)
        .map(|reader| {
            let (api, shared) = (api.clone(), shared.clone());
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    n += 1;
                    let path = match (reader + n) % 4 {
                        0 => format!("/api/v1/incidents/{}", shared[n % shared.len()]),
                        1 => "/api/v1/incidents?limit=50&sort=-created_at".to_owned(),
                        2 => format!("/api/v1/events?after={}&limit=100", n * 7),
                        _ => "/api/v1/audit-events?entity_type=incident&limit=50".to_owned(),
                    };
                    let answer = api.send(Method::GET, &path, None, None).await;
                    *tally.entry(answer.status.as_u16()).or_default() += 1;
                    assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
                }
                tally
            })
        })
        .collect();

    let mut tally = Tally::new();
    let mut acknowledged = Vec::new();
    for writer in writers {
        let (counts, acks) = writer.await.unwrap();
        for (status, count) in counts {
            *tally.entry(status).or_default() += count;
        }
        acknowledged.extend(acks);
    }
    for reader in readers {
        for (status, count) in reader.await.unwrap() {
            *tally.entry(status).or_default() += count;
        }
    }
    // The closure job closes the resolved incidents a second later, beside the last writes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stored = assert_whole(&api, &acknowledged).await;
    let closed = api.list_all("/api/v1/incidents?state=closed").await.len();
    eprintln!(
        "SQLite storm: {} requests by status {tally:?}; {stored} incidents stored, {closed} \
         closed by the background job",
        tally.values().sum::<usize>()
    );
    assert!(
        tally.contains_key(&409) && tally.contains_key(&412),
        "{tally:?}"
    );
    assert!(
        closed > 0,
        "the closure job closed nothing during the storm"
    );
}

// ---------------------------------------------------------------------------------------------
// Outages: what every client sees while the storage is gone, and after
// ---------------------------------------------------------------------------------------------

/// An outage answer: a 503 problem with a stable type, `Retry-After`, and none of the
/// storage's own text; answered within `bound`.
fn assert_outage_answer(what: &str, answer: &Answer, types: &[&str], bound: Duration) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        answer.text
    );
    assert_eq!(answer.content_type, "application/problem+json", "{what}");
    assert!(answer.retry_after.is_some(), "{what}: no Retry-After");
    let problem_type = answer.body["type"].as_str().unwrap_or("");
    assert!(
        types
            .iter()
            .any(|t| problem_type == format!("https://itsm.example/problems/{t}")),
        "{what}: type {problem_type}, expected one of {types:?}"
    );
    for storage_text in [
        "terminating",
        "server closed",
        "refused",
        "disk is full",
        "readonly",
        "I/O",
        "sqlite",
        "SQLSTATE",
    ] {
        assert!(
            !answer.text.contains(storage_text),
            "{what}: the storage's text reached the client: {}",
            answer.text
        );
    }
    assert!(
        answer.elapsed <= bound,
        "{what}: answered after {:?}",
        answer.elapsed
    );
}

/// What the load saw, and when.
#[derive(Default)]
struct Observed {
    acknowledged: Vec<Acknowledged>,
    /// When each 503 arrived, and how long it took.
    outage_answers: Vec<(Instant, Duration)>,
    /// When each write (not read) was acknowledged.
    acknowledged_at: Vec<Instant>,
}

/// Writers creating incidents, changing their description and adding a note, and readers
/// listing, until `stop`: every answer is a 2xx or an outage answer of `types`.
fn start_load(
    api: &Api,
    writers: usize,
    types: &'static [&'static str],
    bound: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Observed>> {
    (0..writers)
        .map(|writer| {
            let (api, stop) = (api.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Observed::default();
                let note = |seen: &mut Observed, what: &str, answer: &Answer| -> bool {
                    if answer.status.is_success() {
                        if what != "list" {
                            seen.acknowledged_at.push(Instant::now());
                        }
                        return true;
                    }
                    assert_outage_answer(what, answer, types, bound);
                    seen.outage_answers.push((Instant::now(), answer.elapsed));
                    false
                };
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    if writer % 4 == 3 {
                        // A reader.
                        let answer = api
                            .send(Method::GET, "/api/v1/incidents?limit=20", None, None)
                            .await;
                        note(&mut seen, "list", &answer);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let create = api
                        .send(
                            Method::POST,
                            "/api/v1/incidents",
                            Some(json!({"title": format!("Outage {writer}.{n}"),
                                        "description": "Under load"})),
                            None,
                        )
                        .await;
                    if !note(&mut seen, "create", &create) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let mut ack = Acknowledged {
                        id: create.body["id"].as_str().unwrap().to_owned(),
                        number: create.body["number"].as_str().unwrap().to_owned(),
                        ..Acknowledged::default()
                    };
                    let own = format!("/api/v1/incidents/{}", ack.id);
                    let description = format!("Described {writer}.{n}");
                    let patch = api
                        .send(
                            Method::PATCH,
                            &own,
                            Some(json!({"description": description})),
                            None,
                        )
                        .await;
                    if note(&mut seen, "PATCH", &patch) {
                        ack.description = Some(description);
                    }
                    let text = format!("Note {writer}.{n}");
                    let added = api
                        .send(
                            Method::POST,
                            &format!("{own}/notes"),
                            Some(json!({"body": text})),
                            None,
                        )
                        .await;
                    if note(&mut seen, "note", &added) {
                        ack.note = Some(text);
                    }
                    seen.acknowledged.push(ack);
                }
                seen
            })
        })
        .collect()
}

async fn gather(load: Vec<tokio::task::JoinHandle<Observed>>) -> Observed {
    let mut all = Observed::default();
    for task in load {
        let seen = task.await.unwrap();
        all.acknowledged.extend(seen.acknowledged);
        all.outage_answers.extend(seen.outage_answers);
        all.acknowledged_at.extend(seen.acknowledged_at);
    }
    all
}

/// Creates an incident until one is acknowledged (or `bound` passes): once `/readyz` is ready
/// again, the load's writers (which pause after each refusal) then meet a committing write
/// path in the second the test gives them, however loaded the machine is.
async fn until_a_write_commits(api: &Api, bound: Duration) {
    let started = Instant::now();
    loop {
        let answer = api
            .send(
                Method::POST,
                "/api/v1/incidents",
                Some(json!({"title": "After the outage", "description": "Probe"})),
                None,
            )
            .await;
        if answer.status == StatusCode::CREATED {
            return;
        }
        assert!(
            started.elapsed() < bound,
            "no write committed {bound:?} after /readyz was ready: {} {}",
            answer.status,
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/readyz` until it answers `ready` (or `bound` passes); how long that took, and
/// that answer.
async fn until_ready(api: &Api, ready: bool, bound: Duration) -> (Duration, Answer) {
    let started = Instant::now();
    loop {
        let answer = api.send(Method::GET, "/readyz", None, None).await;
        if (answer.status == StatusCode::OK) == ready {
            return (started.elapsed(), answer);
        }
        assert!(
            started.elapsed() < bound,
            "/readyz still answers {} after {bound:?}: {}",
            answer.status,
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// PostgreSQL stopped (`pg_ctl stop -m fast`: every session ended) under load and started
/// again: while it is gone every request answers a 503 `database-unreachable` problem with
/// `Retry-After` within a bound, `/readyz` says the database is unreachable, and when it
/// returns the same `itsm` process serves again by itself. Every acknowledged write is there
/// with its audit entry and event, nothing is half-written, and the log has the detail the
/// clients did not get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_answers_503_and_recovers() {
    postgres_outage(
        "faults::postgres_stopped_under_load_answers_503_and_recovers",
        "fast",
    )
    .await;
}

/// The same with PostgreSQL crashed (`pg_ctl stop -m immediate`): it recovers from its WAL
/// when started, and every acknowledged write survived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_under_load_answers_503_and_recovers() {
    postgres_outage(
        "faults::postgres_crashed_under_load_answers_503_and_recovers",
        "immediate",
    )
    .await;
}

async fn postgres_outage(test: &str, mode: &str) {
    let postgres = match itsm_integration_tests::PrivatePostgres::start() {
        Ok(postgres) => postgres,
        Err(why) => return itsm_integration_tests::skip_fault_test(test, &why),
    };
    let log = std::env::temp_dir().join(format!("itsm-outage-{}.log", postgres.port));
    let server = RealServer::start_logging(&postgres.url(), &[], Some(&log)).await;
    let api = Api::of(&server).await;
    let bound = Duration::from_secs(5);
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&api, 12, &["database-unreachable"], bound, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let stopping = Instant::now();
    postgres.stop(mode);
    let stopped = Instant::now();
    let (ready_failed_after, readyz) = until_ready(&api, false, bound).await;
    assert_outage_answer("/readyz", &readyz, &["database-unreachable"], bound);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let starting = Instant::now();
    postgres.start_again();
    let started = Instant::now();
    let (ready_after, _) = until_ready(&api, true, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let observed = gather(load).await;

    let during: Vec<Duration> = observed
        .outage_answers
        .iter()
        .map(|&(_, took)| took)
        .collect();
    assert!(!during.is_empty(), "no request met the outage");
    let first_write_after = observed
        .acknowledged_at
        .iter()
        .filter(|&&at| at > started)
        .min()
        .map(|at| at.duration_since(started))
        .expect("nothing was acknowledged after PostgreSQL returned");
    let last_outage_answer = observed
        .outage_answers
        .iter()
        .map(|&(at, _)| at)
        .max()
        .unwrap();
    let stored = assert_whole(&api, &observed.acknowledged).await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("database-unreachable:"),
        "the log has no detail of the outage"
    );
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "PostgreSQL outage ({mode}): stop took {:?}, start {:?}; {} answers 503 (median {:?}, p99 {:?}, \
         max {:?}); /readyz failed {:?} after the stop and was ready {ready_after:?} after the \
         start; first write acknowledged {first_write_after:?} after the start, last 503 \
         {:?} after it; {} writes acknowledged, {stored} incidents stored whole",
        stopped - stopping,
        started - starting,
        during.len(),
        percentile(during.clone(), 0.5),
        percentile(during.clone(), 0.99),
        percentile(during, 1.0),
        ready_failed_after,
        last_outage_answer.saturating_duration_since(started),
        observed.acknowledged_at.len(),
    );
}

/// The disk holding the SQLite database fills up under load (a small tmpfs, filled by a
/// file) and is freed again: while it is full, writes answer 503 `storage-full` problems with
/// `Retry-After`, reads still answer, and `/readyz` says the disk is full; once space is freed
/// the same process commits again by itself. Every acknowledged write is there with its audit
/// entry and event, nothing is half-written, before and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_disk_answers_503_and_recovers() {
    const TEST: &str = "faults::sqlite_full_disk_answers_503_and_recovers";
    // Big enough for the WAL a loaded minute leaves (the checkpointer restarts it only past
    // 8,192 frames) and for the checkpoint that copies it back once the filler is gone: on
    // 32 MB the WAL could hold most of the disk, and the space freed was too small for that
    // checkpoint, so writes never came back (the same holds for a real disk that small).
    let disk = match itsm_integration_tests::SmallDisk::mount(128) {
        Ok(disk) => disk,
        Err(why) => return itsm_integration_tests::skip_fault_test(TEST, &why),
    };
    let url = format!("sqlite://{}", disk.path.join("itsm.db").display());
    let log = std::env::temp_dir().join(format!(
        "itsm-full-{}.log",
        disk.path.file_name().unwrap().to_string_lossy()
    ));
    let mut server = RealServer::start_logging(&url, &[], Some(&log)).await;
    let api = Api::of(&server).await;
    let bound = Duration::from_secs(5);
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&api, 8, &["storage-full"], bound, stop.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let filled = Instant::now();
    let filler = disk.fill();
    // The WAL may still have room in the pages it already has; the writes soon need more.
    // Writes that fit in the WAL's pages still commit (after a checkpoint it starts over in
    // them), so readiness may come and go while the disk is full: the first refusal counts.
    let (full_after, readyz) = until_ready(&api, false, Duration::from_secs(30)).await;
    assert_outage_answer("/readyz", &readyz, &["storage-full"], bound);
    let read = api
        .send(Method::GET, "/api/v1/incidents?limit=5", None, None)
        .await;
    assert_eq!(
        read.status,
        StatusCode::OK,
        "a read on a full disk: {}",
        read.text
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let (ready_after, _) = until_ready(&api, true, Duration::from_secs(20)).await;
    until_a_write_commits(&api, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let observed = gather(load).await;

    let during: Vec<Duration> = observed
        .outage_answers
        .iter()
        .map(|&(_, took)| took)
        .collect();
    assert!(!during.is_empty(), "no write met the full disk");
    let first_write_after = observed
        .acknowledged_at
        .iter()
        .filter(|&&at| at > freed)
        .min()
        .map(|at| at.duration_since(freed))
        .expect("nothing was acknowledged after the disk was freed");
    let acknowledged_while_full = observed
        .acknowledged_at
        .iter()
        .filter(|&&at| at > filled && at < freed)
        .count();
    let stored = assert_whole(&api, &observed.acknowledged).await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("storage-full:"),
        "the log has no detail of the full disk"
    );

    // And on disk: a restart finds the same.
    server.signal("TERM");
    server.wait(Duration::from_secs(20)).await;
    drop(server);
    let server = RealServer::start(&url).await;
    let api = Api::of(&server).await;
    let stored_after_restart = assert_whole(&api, &observed.acknowledged).await;
    assert_eq!(stored_after_restart, stored);
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "Full disk: /readyz failed {full_after:?} after the disk filled; \
         {acknowledged_while_full} writes acknowledged after the filling began (into pages the \
         database already had); {} answers 503 (median {:?}, p99 {:?}, max {:?}); ready {ready_after:?} and first write \
         acknowledged {first_write_after:?} after space was freed; {} writes acknowledged, \
         {stored} incidents stored whole, the same after a restart",
        during.len(),
        percentile(during.clone(), 0.5),
        percentile(during.clone(), 0.99),
        percentile(during, 1.0),
        observed.acknowledged_at.len(),
    );
}

/// A read-only SQLite database file (immutable as root, without write permission otherwise).
/// An open file keeps the access it was opened with, so the file is made read-only between
/// two runs: the service then starts, serves reads and everything acknowledged before,
/// answers writes with 503 `storage-read-only` problems with `Retry-After`, and `/readyz`
/// says the database is read-only. Made writable again under the running process, it
/// commits again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_only_file_answers_503_and_recovers() {
    const TEST: &str = "faults::sqlite_read_only_file_answers_503_and_recovers";
    let database = ScratchDatabase::new(Backend::Sqlite).unwrap();
    let file = std::path::PathBuf::from(database.url.strip_prefix("sqlite://").unwrap());
    let mut server = RealServer::start(&database.url).await;
    let api = Api::of(&server).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&api, 6, &[], Duration::from_secs(5), stop.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let before = gather(load).await;
    server.signal("TERM");
    server.wait(Duration::from_secs(20)).await;
    drop(server);

    let read_only = match itsm_integration_tests::ReadOnlyFile::make(&file) {
        Ok(read_only) => read_only,
        Err(why) => return itsm_integration_tests::skip_fault_test(TEST, &why),
    };
    let log = std::env::temp_dir().join(format!(
        "itsm-ro-{}.log",
        file.file_name().unwrap().to_string_lossy()
    ));
    let server = RealServer::start_logging_unready(&database.url, &[], Some(&log)).await;
    let api = Api::of(&server).await;
    let bound = Duration::from_secs(5);
    let readyz = api.send(Method::GET, "/readyz", None, None).await;
    assert_outage_answer("/readyz", &readyz, &["storage-read-only"], bound);
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&api, 6, &["storage-read-only"], bound, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stored = assert_whole(&api, &before.acknowledged).await;

    let released = Instant::now();
    read_only.release();
    let (ready_after, _) = until_ready(&api, true, Duration::from_secs(20)).await;
    until_a_write_commits(&api, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let observed = gather(load).await;
    let during: Vec<Duration> = observed
        .outage_answers
        .iter()
        .map(|&(_, took)| took)
        .collect();
    assert!(!during.is_empty(), "no write met the read-only file");
    let first_write_after = observed
        .acknowledged_at
        .iter()
        .filter(|&&at| at > released)
        .min()
        .map(|at| at.duration_since(released))
        .expect("nothing was acknowledged after the file was made writable");
    let mut acknowledged = before.acknowledged.clone();
    acknowledged.extend(observed.acknowledged.iter().cloned());
    let stored_after = assert_whole(&api, &acknowledged).await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("storage-read-only:") && log_text.contains("readonly database"),
        "the log has no detail of the read-only file: {log_text}"
    );
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "Read-only file: {stored} incidents served read-only; {} answers 503 (median {:?}, max \
         {:?}); ready {ready_after:?} and first write acknowledged {first_write_after:?} after \
         the file was made writable; {stored_after} incidents stored whole",
        during.len(),
        percentile(during.clone(), 0.5),
        percentile(during, 1.0),
    );
}
