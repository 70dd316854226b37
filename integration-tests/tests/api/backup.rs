//! Backups of the embedded database: taken under write load, they hold every write
//! acknowledged before they started; a restore is refused while the service runs.

use std::path::PathBuf;

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::json;
use itsm_integration_tests::{read, Backend, TestApp};

/// The incident numbers stored in a SQLite file, read beneath the API.
fn numbers_in(path: &std::path::Path) -> Vec<String> {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        number: String,
    }
    let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy()).expect("open");
    diesel::sql_query("SELECT number FROM incidents")
        .load::<Row>(&mut conn)
        .expect("incidents")
        .into_iter()
        .map(|row| row.number)
        .collect()
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("itsm-{name}-{}.db", uuid::Uuid::new_v4().simple()))
}

async fn backup_under_load_keeps_every_acknowledged_write(app: TestApp) {
    if app.backend != Backend::Sqlite {
        // PostgreSQL is backed up with its own tools; the command says so.
        let refused = persistence::backup::backup(&app.database, &temp_file("pg"));
        assert!(matches!(
            refused,
            Err(persistence::StoreError::Unavailable(_))
        ));
        return;
    }
    let app = std::sync::Arc::new(app);
    let create = |n: usize| {
        let app = app.clone();
        async move {
            let response = app
                .admin(Method::POST, "/api/v1/incidents")
                .json(&json!({"title": format!("Load {n}")}))
                .send()
                .await
                .unwrap();
            let (status, body) = read(response).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body["number"].as_str().unwrap().to_owned()
        }
    };
    let mut acknowledged = Vec::new();
    for n in 0..40 {
        acknowledged.push(create(n).await);
    }
    // Writes go on while the backup is taken.
    let writers: Vec<_> = (40..120).map(|n| tokio::spawn(create(n))).collect();
    let destination = temp_file("backup");
    let (config, path) = (app.database.clone(), destination.clone());
    tokio::task::spawn_blocking(move || persistence::backup::backup(&config, &path))
        .await
        .unwrap()
        .expect("backup");
    for writer in writers {
        writer.await.unwrap();
    }
    // The backup is a database holding every incident acknowledged before it started.
    let in_backup = numbers_in(&destination);
    for number in &acknowledged {
        assert!(
            in_backup.contains(number),
            "{number} is missing from the backup"
        );
    }
    // A backup never overwrites; a restore under a running service is refused.
    assert!(persistence::backup::backup(&app.database, &destination).is_err());
    let refused = persistence::backup::restore(&app.database, &destination);
    assert!(
        matches!(refused, Err(persistence::StoreError::Conflict(ref m)) if m.contains("in use")),
        "{refused:?}"
    );
    // Where no service runs, the restore checks the backup and puts it in place.
    let target = temp_file("restored");
    std::fs::write(&target, b"an old database").unwrap();
    let database = persistence::DatabaseConfig {
        url: Some(format!("sqlite://{}", target.display())),
        ..app.database.clone()
    };
    let not_a_backup = temp_file("junk");
    std::fs::write(&not_a_backup, b"junk").unwrap();
    assert!(persistence::backup::restore(&database, &not_a_backup).is_err());
    persistence::backup::restore(&database, &destination).expect("restore");
    assert_eq!(numbers_in(&target).len(), numbers_in(&destination).len());
    assert!(numbers_in(&target).contains(&acknowledged[0]));
    for path in [destination, not_a_backup, target] {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(format!("{}.lock", path.display()));
    }
}

itsm_integration_tests::on_both_backends!(backup_under_load_keeps_every_acknowledged_write);
