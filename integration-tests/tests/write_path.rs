//! The write path: units of work share a transaction but fail alone. And the settings a
//! PostgreSQL connection keeps between queries.
//!
//! Beneath the API, through the persistence crate; kept in this package so that without
//! ITSM_TEST_POSTGRES_URL its PostgreSQL tests are reported as ignored (see `build.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use diesel::{Connection, PgConnection, RunQueryDsl};
use persistence::incidents;
use persistence::users::{self, NewUser};
use persistence::{audit, outbox, Database, DatabaseConfig, StoreError, WriteContext};

fn temp_sqlite() -> DatabaseConfig {
    let path = std::env::temp_dir().join(format!("itsm-write-path-{}.db", uuid::Uuid::new_v4()));
    DatabaseConfig {
        url: Some(format!("sqlite://{}", path.display())),
        ..DatabaseConfig::default()
    }
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        email: None,
        display_name: name.into(),
        password_hash: None,
        roles: vec![domain::Role::Agent],
        external_refs: vec![],
    }
}

/// The users stored, the audit entries written, and the sequences of the events emitted.
async fn recorded(db: &Database) -> (i64, usize, Vec<i64>) {
    db.read(|conn| -> Result<_, StoreError> {
        let count = users::count(conn)?;
        let entries = audit::list(conn, &Default::default(), None, 500)?;
        let events = outbox::list(conn, 0, &[], 500)?;
        let sequences: Vec<i64> = events.items.iter().map(|e| e.sequence).collect();
        Ok((count, entries.items.len(), sequences))
    })
    .await
    .unwrap()
}

/// Primary units each have a savepoint of their own: a unit that fails after writing, on its
/// own error or on a constraint (which on PostgreSQL aborts the transaction up to the
/// savepoint), loses its work alone, and the units after it in the batch still commit.
async fn primary_units_fail_alone(config: DatabaseConfig) {
    let db = Database::open(&config).unwrap();
    db.write(|conn| users::create(conn, &WriteContext::system("test"), new_user("taken")))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.write(move |conn| -> Result<(), StoreError> {
                let ctx = WriteContext::system("test");
                users::create(conn, &ctx, new_user(&format!("user{i}")))?;
                match i % 4 {
                    1 => Err(StoreError::Conflict("this unit fails after writing".into())),
                    3 => users::create(conn, &ctx, new_user("taken")).map(|_| ()),
                    _ => Ok(()),
                }
            })
            .await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.unwrap();
        assert_eq!(answer.is_err(), i % 2 == 1, "unit {i}: {answer:?}");
    }
    let (count, audit_entries, sequences) = recorded(&db).await;
    assert_eq!(count, 33);
    assert_eq!(audit_entries, 33);
    // The failed units' events were cut off before their numbers were handed out: no gaps.
    assert_eq!(sequences, (1..=33).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_units_fail_alone_on_sqlite() {
    primary_units_fail_alone(temp_sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
async fn primary_units_fail_alone_on_postgres() {
    on_postgres(primary_units_fail_alone).await;
}

/// A PostgreSQL database in a schema of its own, dropped afterwards; `None` without
/// ITSM_TEST_POSTGRES_URL.
struct PostgresSchema {
    url: String,
    schema: String,
}

impl PostgresSchema {
    fn create() -> Option<(Self, DatabaseConfig)> {
        let url = std::env::var("ITSM_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        let schema = format!("w_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::establish(&url).expect("cannot connect to PostgreSQL");
        diesel::sql_query(format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .expect("cannot create the test schema");
        let separator = if url.contains('?') { '&' } else { '?' };
        let config = DatabaseConfig {
            url: Some(format!("{url}{separator}options=-csearch_path%3D{schema}")),
            ..DatabaseConfig::default()
        };
        Some((Self { url, schema }, config))
    }
}

/// Runs `test` on a PostgreSQL schema of its own.
async fn on_postgres<F: std::future::Future<Output = ()>>(test: impl FnOnce(DatabaseConfig) -> F) {
    let Some((_schema, config)) = PostgresSchema::create() else {
        panic!("{}", itsm_integration_tests::NOT_BUILT_FOR_POSTGRES);
    };
    test(config).await;
}

impl Drop for PostgresSchema {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.url) {
            let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
                .execute(&mut conn);
        }
    }
}

/// New-row units share a savepoint; one failing on a constraint (which on PostgreSQL aborts
/// the transaction up to that savepoint) sends its neighbours through again, one savepoint
/// each, and only its own work is lost.
async fn new_row_units_fail_alone(config: DatabaseConfig) {
    let db = Database::open(&config).unwrap();
    db.write(|conn| users::create(conn, &WriteContext::system("test"), new_user("taken")))
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (db, runs) = (db.clone(), runs.clone());
        tasks.push(tokio::spawn(async move {
            db.write_new_rows(move |conn| -> Result<String, StoreError> {
                runs.fetch_add(1, Ordering::Relaxed);
                let ctx = WriteContext::system("test");
                let user = users::create(conn, &ctx, new_user(&format!("user{i}")))?;
                if i % 2 == 1 {
                    users::create(conn, &ctx, new_user("taken"))?;
                }
                Ok(user.username)
            })
            .await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    for (i, answer) in answers.iter().enumerate() {
        match answer {
            Ok(name) => assert!(i % 2 == 0 && *name == format!("user{i}"), "{i}: {name}"),
            Err(e) => assert!(i % 2 == 1, "{i} failed: {e}"),
        }
    }
    // The first unit to fail in a shared savepoint ran twice: shared, then alone.
    assert!(runs.load(Ordering::Relaxed) > 64);
    let (count, audit_entries, sequences) = recorded(&db).await;
    assert_eq!(count, 33);
    assert_eq!(audit_entries, 33);
    assert_eq!(sequences, (1..=33).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_row_units_fail_alone_on_sqlite() {
    new_row_units_fail_alone(temp_sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
async fn new_row_units_fail_alone_on_postgres() {
    on_postgres(new_row_units_fail_alone).await;
}

/// PostgreSQL numbers incidents in the INSERT (the column's default); the numbers must read
/// as the domain formats them, past seven digits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
async fn postgres_incident_numbers_match_the_domain_format() {
    on_postgres(incident_numbers_match_the_domain_format).await;
}

async fn incident_numbers_match_the_domain_format(config: DatabaseConfig) {
    drop(Database::open(&config).unwrap());
    let mut conn = PgConnection::establish(config.url.as_deref().unwrap()).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Number {
        #[diesel(sql_type = diesel::sql_types::Text)]
        number: String,
    }
    let next = |conn: &mut PgConnection| {
        diesel::sql_query("SELECT next_incident_number() AS number")
            .get_result::<Number>(conn)
            .unwrap()
            .number
    };
    assert_eq!(
        next(&mut conn),
        domain::ticket::TicketKind::Incident.number(1)
    );
    diesel::sql_query("SELECT setval('incident_number_seq', 9999998)")
        .execute(&mut conn)
        .unwrap();
    assert_eq!(
        next(&mut conn),
        domain::ticket::TicketKind::Incident.number(9_999_999)
    );
    assert_eq!(
        next(&mut conn),
        domain::ticket::TicketKind::Incident.number(10_000_000)
    );
    assert_eq!(
        domain::ticket::TicketKind::Incident.number(10_000_000),
        "INC10000000"
    );
}

/// A word search plans for its words; the read connection it used is back on generic plans
/// afterwards, for the queries that follow on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
async fn postgres_word_searches_leave_generic_plans_behind() {
    on_postgres(word_searches_leave_generic_plans_behind).await;
}

async fn word_searches_leave_generic_plans_behind(mut config: DatabaseConfig) {
    // One read connection: the search and the check run on the same one.
    config.read_pool_size = 1;
    let db = Database::open(&config).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        plan_cache_mode: String,
    }
    let plan_mode = || {
        db.read(|conn| -> Result<String, StoreError> {
            let setting: Setting = diesel::sql_query("SHOW plan_cache_mode").get_result(conn)?;
            Ok(setting.plan_cache_mode)
        })
    };
    assert_eq!(plan_mode().await.unwrap(), "force_generic_plan");
    let filter = incidents::IncidentFilter {
        q: Some("printer".into()),
        ..Default::default()
    };
    let newest = persistence::tickets::Sort::NEWEST_FIRST;
    let page = db
        .read(move |conn| incidents::list(conn, &filter, newest, None, 10))
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(plan_mode().await.unwrap(), "force_generic_plan");
}
