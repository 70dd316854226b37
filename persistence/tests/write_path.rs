//! The write path: units of work share a transaction but fail alone.

use itsm_persistence::users::{self, NewUser};
use itsm_persistence::{audit, outbox, Database, DatabaseConfig, StoreError, WriteContext};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_unit_rolls_back_alone_within_a_shared_batch() {
    let db = Database::open(&temp_sqlite()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.write(move |conn| -> Result<(), StoreError> {
                let ctx = WriteContext::system("test");
                users::create(conn, &ctx, new_user(&format!("user{i}")))?;
                if i % 2 == 1 {
                    return Err(StoreError::Conflict("odd units fail after writing".into()));
                }
                Ok(())
            })
            .await
        }));
    }
    let mut failed = 0;
    for task in tasks {
        if task.await.unwrap().is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 32);
    let (count, audit_entries, sequences) = db
        .read(|conn| -> Result<_, StoreError> {
            let count = users::count(conn)?;
            let entries = audit::list(conn, &Default::default(), None, 500)?;
            let events = outbox::list(conn, 0, &[], 500)?;
            let sequences: Vec<i64> = events.items.iter().map(|e| e.sequence).collect();
            Ok((count, entries.items.len(), sequences))
        })
        .await
        .unwrap();
    assert_eq!(count, 32);
    assert_eq!(audit_entries, 32);
    // The failed units' events were cut off before their numbers were handed out: no gaps.
    assert_eq!(sequences, (1..=32).collect::<Vec<i64>>());
}
