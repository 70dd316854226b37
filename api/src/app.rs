//! Assembling and starting the service: database, signing keys, bootstrap, HTTP server.

use std::net::SocketAddr;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, Compress, Logger};
use actix_web::{http::header, web, App, HttpRequest, HttpResponse, HttpServer};
use domain::Role;
use persistence::users::{self, NewUser};
use persistence::{Database, WriteContext};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{self, generate_password, hash_password, TokenKeys};
use crate::config::Config;
use crate::error::ApiError;
use crate::json_body::BodyLimit;
use crate::openapi::{ApiDoc, RouteTable};
pub use crate::state::AppState;
use crate::throttle::{LoginThrottle, PasswordHashing};
use crate::{idempotency as idempotency_middleware, request_context, routes};

/// Opens the database (applying migrations), loads or creates the signing secret, and creates
/// the bootstrap admin when there are no users yet.
pub async fn prepare(config: &Config) -> Result<web::Data<AppState>, String> {
    let serve_lock = persistence::ServeLock::for_serving(&config.database)
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let database_config = config.database.clone();
    let db = tokio::task::spawn_blocking(move || Database::open(&database_config))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the database: {e}"))?;
    if let Some(secret) = &config.jwt_secret {
        crate::config::check_signing_secret(secret)?;
    }
    let tokens = TokenKeys::new(config.jwt_secret.as_deref(), config.token_ttl_seconds);
    crate::keys::ensure_signing_key(&db, &tokens).await?;
    bootstrap_admin(&db, config.admin_password.clone()).await?;
    Ok(web::Data::new(AppState {
        db,
        tokens,
        routes: RouteTable::from_spec(),
        access: auth::recent_access(),
        api_tokens: auth::recent_api_tokens(),
        routing_rules: crate::routes::assignment_rules::recent_rules(),
        incident_lookups: persistence::tickets::lookups(),
        problem_lookups: persistence::tickets::lookups(),
        change_lookups: persistence::tickets::lookups(),
        serve_lock,
        stopping: std::sync::atomic::AtomicBool::new(false),
        login_throttle: LoginThrottle::new(config.login),
        password_hashing: PasswordHashing::new(
            config.password_hash_concurrency,
            config.password_hash_queue,
        ),
        searches: tokio::sync::Semaphore::new(AppState::search_slots(
            config.database.read_pool_size,
        )),
        search_slot_count: AppState::search_slots(config.database.read_pool_size),
        token_uses: auth::TokenUses::default(),
        clock: config.clock.clone(),
        sla_rules: crate::recent::RecentReads::new(std::time::Duration::from_secs(1), 1),
        alert_rules: crate::routes::alerts::recent_rules(),
        alert_intake: tokio::sync::Semaphore::new(config.alert_queue),
        alert_queue: crate::usecases::alerts::Intake::default(),
        alert_flap_window: chrono::Duration::seconds(config.alert_flap_window_seconds),
        webhooks: config.webhooks.clone(),
        webhook_sender: crate::webhook_delivery::Sender::new(&config.webhooks)?,
    }))
}

async fn bootstrap_admin(db: &Database, password: Option<String>) -> Result<(), String> {
    let is_empty = db
        .read(users::count)
        .await
        .map_err(|e| format!("cannot count users: {e}"))?
        == 0;
    if !is_empty {
        return Ok(());
    }
    let generated = password.is_none();
    if let Some(password) = &password {
        domain::validate_password(password).map_err(|_| {
            "ITSM_ADMIN_PASSWORD must be 12 to 256 characters long (the password rule)".to_owned()
        })?;
    }
    let password = password.unwrap_or_else(generate_password);
    let hash = hash_password(&password).map_err(|e| e.to_string())?;
    let created = db
        .write(move |conn| -> Result<bool, persistence::StoreError> {
            // Another node may have bootstrapped meanwhile.
            if users::count(conn)? > 0 {
                return Ok(false);
            }
            let ctx = WriteContext::system("bootstrap");
            let admin = NewUser {
                username: "admin".into(),
                email: None,
                display_name: "Administrator".into(),
                password_hash: Some(hash),
                roles: vec![Role::Admin],
                external_refs: Vec::new(),
            };
            users::create(conn, &ctx, admin).map(|_| true)
        })
        .await
        .map_err(|e| format!("cannot create the admin user: {e}"))?;
    if created && generated {
        // Printed once, on the first start of an empty database, so the operator can sign in.
        log::warn!("created user 'admin' with the generated password {password} (set ITSM_ADMIN_PASSWORD to choose it)");
    } else if created {
        log::info!("created user 'admin' with the password from ITSM_ADMIN_PASSWORD");
    }
    Ok(())
}

/// A bound, not yet awaited, HTTP server.
pub struct Running {
    pub addr: SocketAddr,
    pub server: Server,
}

/// Prepares the state and binds the server to `config.bind`.
pub async fn start(config: Config) -> Result<Running, String> {
    let state = prepare(&config).await?;
    crate::jobs::spawn(state.clone(), &config);
    crate::jobs::spawn_sla_worker(
        state.clone(),
        std::time::Duration::from_millis(config.sla_interval_ms),
    );
    crate::webhook_delivery::spawn(state.db.clone(), config.webhooks.clone())?;
    let body_limit = web::Data::new(BodyLimit(config.max_body_bytes));
    let cors_origins = config.cors_origins.clone();
    let signal_state = state.clone();
    let hsts = web::Data::new(crate::security_headers::Hsts::max_age(config.hsts_seconds));
    let rate_limits = web::Data::new(crate::rate_limit::RateLimits::new(
        config.rate_limit_per_credential,
        config.rate_limit_per_address,
        config.rate_limit_window_seconds,
    ));
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(body_limit.clone())
            .app_data(hsts.clone())
            .app_data(rate_limits.clone())
            .wrap(from_fn(literal_paths_first))
            .wrap(from_fn(crate::conditional::not_modified))
            .wrap(from_fn(idempotency_middleware::middleware))
            .wrap(cors(&cors_origins))
            .wrap(from_fn(crate::preflight::refusals_as_problems))
            .wrap(Compress::default())
            .wrap(from_fn(crate::rate_limit::middleware))
            .wrap(from_fn(request_context::middleware))
            .wrap(from_fn(refuse_while_stopping))
            .wrap(from_fn(crate::security_headers::middleware))
            .wrap(Logger::new("%a \"%r\" %s %b %Dms id=%{x-request-id}o"))
            .configure(routes::configure)
            .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi()))
            .service(web::redirect("/docs", "/docs/"))
            .default_service(web::to(fallback))
    })
    .shutdown_timeout(10)
    // Signals are handled below, so that requests arriving meanwhile get a 503, not a reset.
    .disable_signals();
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    let server = server
        .bind(&config.bind)
        .map_err(|e| format!("cannot bind {}: {e}", config.bind))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| "bound to no address".to_owned())?;
    let server = server.run();
    actix_web::rt::spawn(stop_on_signal(signal_state, server.handle()));
    Ok(Running { addr, server })
}

/// On SIGTERM or SIGINT: mark the service as stopping (new requests get 503 with
/// `Retry-After`), stop accepting connections, let the requests in flight finish, and let the
/// writer commit what it was given.
async fn stop_on_signal(state: web::Data<AppState>, handle: ServerHandle) {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::warn!("cannot listen for SIGTERM and SIGINT; stop the service with SIGKILL");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    log::info!("stopping: finishing the requests in flight");
    state
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    handle.stop(true).await;
}

/// `PATCH /api/v1/changes/calendar` matches `PATCH /api/v1/changes/{id}`, but the path names
/// the calendar, which only has GET: 405 with `Allow`, not the change handler with
/// `calendar` for an id.
async fn literal_paths_first(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let shadowed = req.app_data::<web::Data<AppState>>().and_then(|state| {
        state
            .routes
            .shadowed_method(req.method().as_str(), req.path())
    });
    if let Some(allow) = shadowed {
        let error = ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        };
        return Ok(req.error_response(error).map_into_right_body());
    }
    next.call(req)
        .await
        .map(|response| response.map_into_left_body())
}

/// Answers 503 to requests that arrive while the service stops.
async fn refuse_while_stopping(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let stopping = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.stopping.load(std::sync::atomic::Ordering::SeqCst));
    if stopping {
        let error = ApiError::Unavailable("the service is stopping; retry on another node".into());
        return Ok(req.error_response(error).map_into_right_body());
    }
    next.call(req)
        .await
        .map(|response| response.map_into_left_body())
}

fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allow_any_method()
        .allow_any_header()
        .expose_headers([
            header::ETAG,
            header::LINK,
            header::LOCATION,
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("idempotent-replayed"),
            header::HeaderName::from_static("ratelimit"),
            header::HeaderName::from_static("ratelimit-policy"),
        ])
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

/// Unknown path: 404. Known path, other method: 405 with `Allow`.
async fn fallback(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.routes.allowed_methods(req.path()) {
        Some(allow) => Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        }),
        None => Err(ApiError::NotFound(format!("no resource at {}", req.path()))),
    }
}

/// A server running on its own thread, for tests and the benchmark.
pub struct Spawned {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spawned {
    /// Stops the server and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            let handle = self.handle.clone();
            // Its own thread: the caller may be inside an async runtime that cannot block.
            let stopper = std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(handle.stop(false))
            });
            let _ = stopper.join();
            let _ = thread.join();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the service on a background thread and returns once it listens.
pub fn spawn(config: Config) -> Result<Spawned, String> {
    let (ready, started) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            match start(config).await {
                Ok(running) => {
                    let _ = ready.send(Ok((running.addr, running.server.handle())));
                    let _ = running.server.await;
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        });
    });
    let (addr, handle) = started
        .recv()
        .map_err(|_| "the server thread ended before listening".to_owned())??;
    Ok(Spawned {
        addr,
        handle,
        thread: Some(thread),
    })
}
