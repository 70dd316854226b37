//! `itsm`: serve the API, apply migrations, print the OpenAPI spec, or manage users.

use std::io::BufRead;
use std::process::ExitCode;

use domain::{validate_password, validate_username, Role};
use itsm_api::{app, auth, openapi, Config};
use persistence::users::{self, NewUser};
use persistence::{Database, WriteContext};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  itsm [serve]                                   serve the API (the default)
  itsm migrate                                   apply pending database migrations and exit
  itsm openapi                                   print the OpenAPI spec
  itsm users create --username U --role R [--role R2]
                                                 create a user; the password is read from stdin
  itsm seed --incidents N [--sla-target-seconds T]
                                                 add demo data: 4 groups, 20 agents, N incidents
                                                 (with T: first an SLA policy of T seconds on 24x7,
                                                 so that every open incident runs timers)
  itsm plans                                     print the query plan of each incident, problem and change list filter
  itsm keys rotate                               add a new JWT signing key: nodes sign with it within
                                                 seconds; the keys signing until now keep verifying
                                                 until their last token can have expired, then retire
  itsm keys retire KID                           retire a key at once (a leaked one): its tokens are
                                                 refused within a second (rotate first if it signs)
  itsm keys list                                 the keys, their kids and states (never a secret)
  itsm backup PATH                               copy the SQLite database to PATH while it serves
  itsm restore PATH                              replace the SQLite database with the backup at PATH
                                                 (refused while a service uses it)
Configuration comes from ITSM_* environment variables (see README.md).";

/// How long mimalloc keeps freed memory resident before it returns it to the system, unless
/// MIMALLOC_PURGE_DELAY says otherwise. mimalloc 3 waits 1,000 ms: in the CMDB benchmark (16
/// concurrent impact walks of 1,000 items, about 0.5 MB of JSON each) the memory of the last
/// second's answers stayed resident, a peak of 202 MB on SQLite. At 50 ms: 176 MB; at 5 ms,
/// 160-171 MB; at 0 ms, 163 MB and a quarter less throughput (a purge on every free).
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 50;

#[allow(unsafe_code)]
fn configure_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // `mi_option_purge_delay` (its old name `mi_option_reset_delay`): 15 in mimalloc 2 and 3;
    // libmimalloc-sys names no constant for it.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: called once, first thing in main, before the process starts another thread
    // (mi_option_set is not thread-safe); an option index and a value in milliseconds, as
    // mimalloc's header documents.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS) };
}

fn main() -> ExitCode {
    configure_allocator();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] | ["serve"] => serve(),
        ["migrate"] => migrate(),
        ["openapi"] => {
            print!("{}", openapi::spec_json());
            Ok(())
        }
        ["users", "create", rest @ ..] => create_user(rest),
        ["seed", "--incidents", count] => seed(count, None),
        ["seed", "--incidents", count, "--sla-target-seconds", target] => seed(count, Some(target)),
        ["plans"] => plans(),
        ["keys", "rotate"] => rotate_keys(),
        ["keys", "retire", kid] => retire_key(kid),
        ["keys", "list"] => list_keys(),
        ["backup", path] => backup(path),
        ["restore", path] => restore(path),
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("itsm: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> Result<(), String> {
    let config = Config::from_env()?;
    log::info!("starting with {config:?}");
    actix_web::rt::System::new().block_on(async move {
        let running = app::start(config).await?;
        log::info!("listening on http://{}", running.addr);
        // actix-web stops gracefully on SIGTERM and SIGINT: it stops accepting, lets requests
        // in flight finish, then the writer drains its queue as the last handle drops.
        running.server.await.map_err(|e| e.to_string())
    })
}

fn migrate() -> Result<(), String> {
    let config = Config::from_env()?;
    let applied = Database::migrate_only(&config.database).map_err(|e| e.to_string())?;
    println!("applied {applied} migration(s)");
    Ok(())
}

fn create_user(args: &[&str]) -> Result<(), String> {
    let mut username = None;
    let mut roles = Vec::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match *flag {
            "--username" => username = Some(value.to_lowercase()),
            "--role" => roles.push(
                value
                    .parse::<Role>()
                    .map_err(|_| format!("--role must be one of {}", Role::names()))?,
            ),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let username = username.ok_or("--username is required")?;
    if roles.is_empty() {
        return Err("at least one --role is required".into());
    }
    validate_username(&username).map_err(|e| format!("username: {e:?}"))?;
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    validate_password(&password)
        .map_err(|_| "the password must be 12 to 256 characters long".to_owned())?;
    let hash = auth::hash_password(&password).map_err(|e| e.to_string())?;
    let config = Config::from_env()?;
    actix_web::rt::System::new().block_on(async move {
        let db = Database::open(&config.database).map_err(|e| e.to_string())?;
        roles.sort();
        roles.dedup();
        let new = NewUser {
            display_name: username.clone(),
            username,
            email: None,
            password_hash: Some(hash),
            roles,
            external_refs: Vec::new(),
        };
        let user = db
            .write(move |conn| users::create(conn, &WriteContext::system("cli"), new))
            .await
            .map_err(|e: persistence::StoreError| e.to_string())?;
        println!("created user {} ({})", user.username, user.id);
        Ok(())
    })
}

fn plans() -> Result<(), String> {
    let config = Config::from_env()?;
    actix_web::rt::System::new().block_on(async move {
        // Only the database: no signing secret, no bootstrap admin for a read-only command.
        let db = Database::open(&config.database).map_err(|e| e.to_string())?;
        let no_sample = |e| match e {
            persistence::StoreError::NotFound => {
                "no incident in progress or problem to take filter values from (run `itsm seed`)"
                    .to_owned()
            }
            other => other.to_string(),
        };
        let incident_plans = itsm_api::plans::incident_list_plans(&db)
            .await
            .map_err(no_sample)?;
        let problem_plans = itsm_api::plans::problem_list_plans(&db)
            .await
            .map_err(no_sample)?;
        let change_plans = itsm_api::plans::change_list_plans(&db)
            .await
            .map_err(no_sample)?;
        let sections = [
            ("incidents", incident_plans),
            ("problems", problem_plans),
            ("changes", change_plans),
        ];
        for (collection, plans) in sections {
            for (filter, lines) in plans {
                println!("GET /api/v1/{collection}?{filter}");
                for line in lines {
                    println!("    {line}");
                }
            }
        }
        Ok(())
    })
}

/// The database and the token settings, for `itsm keys`: no bootstrap, no server.
fn key_store() -> Result<(Database, auth::TokenKeys), String> {
    let config = Config::from_env()?;
    let db = Database::open(&config.database).map_err(|e| e.to_string())?;
    let tokens = auth::TokenKeys::new(config.jwt_secret.as_deref(), config.token_ttl_seconds);
    Ok((db, tokens))
}

fn rotate_keys() -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let (db, tokens) = key_store()?;
        let rotated = itsm_api::keys::rotate(&db, &tokens)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "new signing key {}; the keys signing until now retire at {}Z",
            rotated.kid,
            rotated.previous_retire_at.format("%FT%T")
        );
        Ok(())
    })
}

fn retire_key(kid: &str) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let (db, _) = key_store()?;
        match itsm_api::keys::retire(&db, kid).await {
            Ok(true) => {
                println!("retired {kid}: its tokens are refused within a second");
                Ok(())
            }
            Ok(false) => Err(format!("no live key has the kid {kid}")),
            Err(e) => Err(e.to_string()),
        }
    })
}

fn list_keys() -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let (db, _) = key_store()?;
        for line in itsm_api::keys::describe(&db)
            .await
            .map_err(|e| e.to_string())?
        {
            println!("{line}");
        }
        Ok(())
    })
}

fn backup(path: &str) -> Result<(), String> {
    let config = Config::from_env()?;
    persistence::backup::backup(&config.database, std::path::Path::new(path))
        .map_err(|e| format!("backup failed: {e}"))?;
    println!("backed up to {path}");
    Ok(())
}

fn restore(path: &str) -> Result<(), String> {
    let config = Config::from_env()?;
    persistence::backup::restore(&config.database, std::path::Path::new(path))
        .map_err(|e| format!("restore refused: {e}"))?;
    println!("restored from {path}");
    Ok(())
}

fn seed(count: &str, sla_target: Option<&str>) -> Result<(), String> {
    let count: usize = count
        .parse()
        .map_err(|_| "--incidents takes a number".to_owned())?;
    let sla_target: Option<i64> = sla_target
        .map(|t| {
            t.parse()
                .map_err(|_| "--sla-target-seconds takes a number".to_owned())
        })
        .transpose()?;
    let config = Config::from_env()?;
    actix_web::rt::System::new().block_on(async move {
        // The same start-up as `serve` (migrations, signing secret, bootstrap admin), so that a
        // seeded database is one the service can be signed in to.
        let state = app::prepare(&config).await?;
        let db = &state.db;
        if let Some(target) = sla_target {
            itsm_api::seed::sla_policy(db, target)
                .await
                .map_err(|e| e.to_string())?;
        }
        let started = std::time::Instant::now();
        let seeded = itsm_api::seed::seed(db, count)
            .await
            .map_err(|e| e.to_string())?;
        db.optimize().await.map_err(|e| e.to_string())?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "seeded {} incidents and {} problems in {seconds:.1} s ({:.0} incidents/s)",
            seeded.incidents,
            seeded.problems,
            seeded.incidents as f64 / seconds.max(0.001)
        );
        Ok(())
    })
}
