//! Authentication (JWT for people, hashed API tokens for machines) and role checks.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use chrono::Utc;
use domain::{role_permits, ApiToken, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use persistence::{api_tokens, signing_keys, users, Database, WriteContext};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::recent::RecentReads;
use crate::request_context;
use crate::state::AppState;

/// API token secrets start with this, so they are recognisable in configuration and scanners.
pub const API_TOKEN_PREFIX: &str = "itsm_";

/// JWT signing: the keys every node shares through the database, and the token lifetime.
///
/// Keys rotate without downtime: `itsm keys rotate` adds a key, which nodes start signing
/// with once it is older than [`KEY_PUBLICATION_DELAY`] (by then every node has read it, so no
/// node meets a token signed with a key it does not know yet); the keys that signed before
/// keep verifying until their last token can have expired, then retire. Tokens name their key
/// in the `kid` header; an unknown or retired kid is refused.
pub struct TokenKeys {
    validation: Validation,
    pub ttl_seconds: i64,
    /// `ITSM_JWT_SECRET` and its kid: this key's secret stays in the environment.
    configured: Option<(String, Vec<u8>)>,
    keys: RecentReads<(), Arc<KeySet>>,
}

/// Clock skew tolerated between nodes, in seconds.
const LEEWAY_SECONDS: i64 = 5;

/// How long a new key is only verified before it signs: longer than the second a node trusts
/// the keys it read.
pub const KEY_PUBLICATION_DELAY: Duration = Duration::from_secs(2);

/// The live keys as this node read them.
struct KeySet {
    /// Oldest first: `(kid, key, retires at in unix seconds)`.
    verifying: Vec<(String, DecodingKey, Option<i64>)>,
    signing: Option<(String, EncodingKey)>,
}

impl TokenKeys {
    pub fn new(configured_secret: Option<&str>, ttl_seconds: i64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS as u64;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Self {
            validation,
            ttl_seconds,
            configured: configured_secret
                .map(|secret| (configured_kid(secret), secret.as_bytes().to_vec())),
            // Read at most once a second per node, like users' access.
            keys: RecentReads::new(Duration::from_secs(1), 1),
        }
    }

    /// The kid of the key configured in `ITSM_JWT_SECRET`, if any.
    pub fn configured_kid(&self) -> Option<&str> {
        self.configured.as_ref().map(|(kid, _)| kid.as_str())
    }

    /// When the keys signing at `now` must retire if a rotation happens at `now`: after the
    /// new key starts signing, their last token lives the maximum lifetime plus the leeway.
    pub fn retirement_after_rotation(&self, now: chrono::NaiveDateTime) -> chrono::NaiveDateTime {
        now + chrono::Duration::seconds(
            KEY_PUBLICATION_DELAY.as_secs() as i64 + self.ttl_seconds.max(0) + LEEWAY_SECONDS,
        )
    }

    async fn key_set(&self, db: &Database) -> ApiResult<Arc<KeySet>> {
        self.keys
            .get_or_read(&(), || async {
                let now = persistence::now_utc();
                let live = db
                    .read_bounded(move |conn| signing_keys::live(conn, now))
                    .await
                    .map_err(ApiError::from)?;
                Ok::<_, ApiError>(Arc::new(self.usable(live, now)))
            })
            .await
    }

    /// The keys this node can use: stored secrets, and the configured one.
    fn usable(&self, live: Vec<signing_keys::SigningKey>, now: chrono::NaiveDateTime) -> KeySet {
        let publication = chrono::Duration::from_std(KEY_PUBLICATION_DELAY).unwrap_or_default();
        let mut verifying = Vec::new();
        let mut signing = None;
        let mut newest = None;
        for key in live {
            let secret = match (&key.secret, &self.configured) {
                (Some(stored), _) => stored.as_bytes().to_vec(),
                (None, Some((kid, configured))) if *kid == key.kid => configured.clone(),
                // Another node's configured key: its tokens are refused here.
                (None, _) => continue,
            };
            let retires_at = key.retires_at.map(|at| at.and_utc().timestamp());
            verifying.push((
                key.kid.clone(),
                DecodingKey::from_secret(&secret),
                retires_at,
            ));
            let signer = (key.kid.clone(), EncodingKey::from_secret(&secret));
            if key.created_at + publication <= now {
                signing = Some(signer);
            } else {
                newest = Some(signer);
            }
        }
        KeySet {
            verifying,
            // A fresh database's first key signs at once: no node has tokens of another.
            signing: signing.or(newest),
        }
    }

    pub async fn issue(&self, db: &Database, user_id: &str, roles: &[Role]) -> ApiResult<String> {
        let keys = self.key_set(db).await?;
        self.sign(&keys, user_id, roles)
    }

    fn sign(&self, keys: &KeySet, user_id: &str, roles: &[Role]) -> ApiResult<String> {
        let (kid, key) = keys
            .signing
            .as_ref()
            .ok_or_else(|| ApiError::Internal("no signing key is live".into()))?;
        let now = Utc::now();
        let claims = Claims {
            sub: user_id.to_owned(),
            roles: roles.to_vec(),
            iat: now.timestamp(),
            iat_ms: Some(now.timestamp_millis()),
            exp: now.timestamp() + self.ttl_seconds,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| ApiError::Internal(format!("cannot sign a token: {e}")))
    }

    /// Checks key, signature, algorithm and expiry (see [`TokenKeys::verify_with`]).
    async fn verify(&self, db: &Database, token: &str) -> ApiResult<Option<Claims>> {
        if jsonwebtoken::decode_header(token).is_err() {
            return Ok(None);
        }
        let keys = self.key_set(db).await?;
        Ok(self.verify_with(&keys, token))
    }

    /// Checks key, signature, algorithm and expiry; `alg: none` and other algorithms are
    /// refused, and so are tokens of an unknown or retired key, issued in the future or living
    /// longer than this service issues them for. A token without `kid` (issued before keys
    /// rotated) is checked with the oldest live key.
    fn verify_with(&self, keys: &KeySet, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let found = match &header.kid {
            Some(kid) => keys.verifying.iter().find(|(k, ..)| k == kid),
            None => keys.verifying.first(),
        };
        let now = Utc::now().timestamp();
        let (_, key, _) = found.filter(|(.., retires)| retires.is_none_or(|at| at > now))?;
        self.checked(token, key, now)
    }

    fn checked(&self, token: &str, key: &DecodingKey, now: i64) -> Option<Claims> {
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .ok()?
            .claims;
        let plausible = claims.iat <= now + LEEWAY_SECONDS
            && claims.exp - claims.iat <= self.ttl_seconds + LEEWAY_SECONDS
            && !claims.jti.is_empty();
        plausible.then_some(claims)
    }

    /// Forgets the keys read, after this node changed them.
    pub fn forget(&self) {
        self.keys.forget_all();
    }
}

/// The kid of a configured secret: derived from it, so that every node configured alike names
/// it alike, and one-way, so that it reveals nothing of the secret.
fn configured_kid(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("env-{hex}")
}

/// A new random kid for a generated key.
pub fn generate_kid() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<9>())
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    roles: Vec<Role>,
    iat: i64,
    /// `iat` in milliseconds, so that a password change refuses the tokens issued before it in
    /// the same second and not those issued after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat_ms: Option<i64>,
    exp: i64,
    jti: String,
}

impl Claims {
    fn issued_at_ms(&self) -> i64 {
        self.iat_ms
            .filter(|ms| ms.div_euclid(1000) == self.iat)
            .unwrap_or(self.iat.saturating_mul(1000))
    }
}

/// A new random secret for signing tokens, when none is configured or stored.
pub fn generate_signing_secret() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<48>())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A new API token secret and the hash that is stored for it.
pub fn generate_api_token() -> (String, String) {
    let secret = format!(
        "{API_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    );
    let hash = hash_api_token(&secret);
    (secret, hash)
}

/// API token secrets are 256 random bits, so a fast hash is enough to make the stored value
/// useless to a reader of the database.
fn hash_api_token(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random password for the bootstrap admin when none is configured.
pub fn generate_password() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<18>())
}

/// argon2id with the crate's default cost (19 MiB, 2 passes).
pub fn hash_password(password: &str) -> ApiResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::Internal(format!("cannot hash a password: {e}")))
}

/// Verifies `password`; with no stored hash it verifies against a dummy one, so an unknown
/// user costs the same time as a wrong password.
pub fn verify_password(stored_hash: Option<&str>, password: &str) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy =
        DUMMY.get_or_init(|| hash_password("dummy password for timing").unwrap_or_default());
    let (hash, real) = match stored_hash {
        Some(hash) => (hash, true),
        None => (dummy.as_str(), false),
    };
    let verified = PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    verified && real
}

/// Who is calling: a signed-in user or an API token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user id, or the API token id.
    pub id: String,
    /// The username, or `api-token:<name>`.
    pub name: String,
    pub roles: Vec<Role>,
    pub kind: CallerKind,
    /// The access token's id and expiry (unix seconds), for logout; `None` for API tokens.
    pub session: Option<(String, i64)>,
    /// When the request was authenticated, by the service's clock: the time its writes record.
    pub at: chrono::NaiveDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    User,
    ApiToken,
}

impl Caller {
    pub fn has_any(&self, allowed: &[Role]) -> bool {
        role_permits(&self.roles, allowed)
    }

    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Who, when and in which request, for the audit trail of a unit of work.
    pub fn write_context(&self) -> WriteContext {
        WriteContext {
            actor: self.actor(),
            request_id: request_context::current_request_id(),
            at: self.at,
            sla: None,
        }
    }

    /// The caller as the actor of the changes it makes: a user or an API token.
    pub fn actor(&self) -> domain::Actor {
        domain::Actor {
            kind: match self.kind {
                CallerKind::User => domain::ActorKind::User,
                CallerKind::ApiToken => domain::ActorKind::ApiToken,
            },
            id: Some(self.id.clone()),
            username: self.name.clone(),
        }
    }

    /// The key idempotency records are kept under.
    pub fn principal(&self) -> String {
        match self.kind {
            CallerKind::User => format!("user:{}", self.id),
            CallerKind::ApiToken => format!("token:{}", self.id),
        }
    }
}

const INVALID_TOKEN: &str = "the access token is missing, malformed, expired or revoked";

fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Present on a request while its credential is read from the database. Actix polls a
/// handler's extractors together and answers the first error that is ready, so a body's 422
/// could overtake the 401 or 403 of a caller whose credential was not in `RecentReads`: the
/// body extractor waits for this first (see [`credential_read`]).
struct ReadingCredential(tokio::sync::watch::Receiver<bool>);

/// Marks `req` as reading its credential until the returned sender drops.
fn reading_credential(req: &HttpRequest) -> tokio::sync::watch::Sender<bool> {
    let (reading, receiver) = tokio::sync::watch::channel(false);
    req.extensions_mut().insert(ReadingCredential(receiver));
    reading
}

/// Waits while the credential of `req` is being read, so that its refusal comes first.
pub async fn credential_read(req: &HttpRequest) {
    let reading = req
        .extensions()
        .get::<ReadingCredential>()
        .map(|r| r.0.clone());
    if let Some(mut reading) = reading {
        // The sender drops when the read is over: the wait then ends with `Err`.
        let _ = reading.wait_for(|done| *done).await;
    }
}

/// Authenticates the request: verifies the credential and reads its holder's state, kept for
/// at most a second (`RecentReads`): deactivation, role changes and revocation take effect at
/// once on the node that made them, and within a second on the others.
pub async fn authenticate(req: &HttpRequest) -> ApiResult<Caller> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let token = bearer_token(req).ok_or(ApiError::Unauthenticated(INVALID_TOKEN))?;
    if token.starts_with(API_TOKEN_PREFIX) {
        let hash = hash_api_token(token);
        let unrevoked = state
            .api_tokens
            .get_or_read(&hash, || {
                let hash = hash.clone();
                let reading = reading_credential(req);
                async move {
                    let _reading = reading;
                    match state
                        .db
                        .read_bounded(move |conn| api_tokens::find_by_hash(conn, &hash))
                        .await?
                    {
                        Some(t) if t.revoked_at.is_none() => Ok(t),
                        _ => Err(ApiError::Unauthenticated(INVALID_TOKEN)),
                    }
                }
            })
            .await?;
        if unrevoked.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(ApiError::Unauthenticated(INVALID_TOKEN));
        }
        if let Some(needed) = domain::scopes::required(req.method().as_str(), req.path()) {
            if !domain::scopes::token_admits(unrevoked.scopes.as_deref(), &needed) {
                return Err(ApiError::Forbidden(match unrevoked.scopes {
                    Some(_) => format!("this API token lacks the scope {needed}"),
                    None => format!(
                        "this API token has no scopes, so it may only read; \
                         create a token with the scope {needed}"
                    ),
                }));
            }
        }
        note_token_use(req, &unrevoked.id);
        return Ok(Caller {
            name: domain::Actor::api_token(&unrevoked.id, &unrevoked.name).username,
            id: unrevoked.id,
            roles: vec![unrevoked.role],
            kind: CallerKind::ApiToken,
            session: None,
            at: state.clock.now(),
        });
    }
    // The signing keys may be read from the database too: held until the user's access is
    // read, so that no body error overtakes a refusal.
    let reading_keys = reading_credential(req);
    let claims = state
        .tokens
        .verify(&state.db, token)
        .await?
        .ok_or(ApiError::Unauthenticated(INVALID_TOKEN))?;
    let user_id = claims.sub.clone();
    let access = state
        .access
        .get_or_read(&user_id, || {
            let lookup_id = user_id.clone();
            let reading = reading_credential(req);
            async move {
                let _reading = reading;
                match state
                    .db
                    .read_bounded(move |conn| {
                        users::token_state(conn, &lookup_id, persistence::now_utc())
                    })
                    .await?
                {
                    Some(found) => Ok(UserAccess {
                        valid_after_ms: found.valid_after.map(|at| at.and_utc().timestamp_millis()),
                        username: found.username,
                        roles: found.roles,
                        must_change_password: found.must_change_password,
                        revoked: found.revoked,
                    }),
                    None => Err(ApiError::Unauthenticated(INVALID_TOKEN)),
                }
            }
        })
        .await?;
    drop(reading_keys);
    let issued_before_reset = access
        .valid_after_ms
        .is_some_and(|valid_after| claims.issued_at_ms() < valid_after);
    if issued_before_reset || access.revoked.contains(&claims.jti) {
        return Err(ApiError::Unauthenticated(INVALID_TOKEN));
    }
    if access.must_change_password && !PASSWORD_CHANGE_PATHS.contains(&req.path()) {
        return Err(ApiError::Forbidden(
            "your password was reset: choose a new one with POST /api/v1/me/password".into(),
        ));
    }
    Ok(Caller {
        id: user_id,
        name: access.username,
        roles: access.roles,
        kind: CallerKind::User,
        session: Some((claims.jti, claims.exp)),
        at: state.clock.now(),
    })
}

/// What a user whose password was reset may still call.
const PASSWORD_CHANGE_PATHS: [&str; 3] =
    ["/api/v1/me", "/api/v1/me/password", "/api/v1/auth/logout"];

/// What the token check needs of a user on every request (where reading it was a database
/// round trip of its own, one of two in a GET): name, roles, and which tokens are refused.
#[derive(Debug, Clone)]
pub struct UserAccess {
    username: String,
    roles: Vec<Role>,
    /// Tokens issued before this (unix milliseconds) are refused.
    valid_after_ms: Option<i64>,
    must_change_password: bool,
    /// Revoked token ids (logout), until they expire.
    revoked: Vec<String>,
}

/// When each API token's use was last written, so that `last_used_at` costs a write per token
/// per minute, not one per request.
#[derive(Default)]
pub struct TokenUses(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

const TOKEN_USE_RESOLUTION: Duration = Duration::from_secs(60);

/// Records the use of an API token in the background, at most once a minute per token.
fn note_token_use(req: &HttpRequest, id: &str) {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return;
    };
    {
        let mut uses = state.token_uses.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if uses
            .get(id)
            .is_some_and(|at| now.duration_since(*at) < TOKEN_USE_RESOLUTION)
        {
            return;
        }
        if uses.len() >= 10_000 {
            uses.retain(|_, at| now.duration_since(*at) < TOKEN_USE_RESOLUTION);
        }
        uses.insert(id.to_owned(), now);
    }
    let id = id.to_owned();
    actix_web::rt::spawn(async move {
        let at = persistence::now_utc();
        let written = state
            .db
            .write(move |conn| api_tokens::touch(conn, &id, at))
            .await;
        if let Err(e) = written {
            log::warn!("cannot record an API token's use: {e}");
        }
    });
}

/// Users' access is trusted for a second after it was read (see `recent`).
pub fn recent_access() -> RecentReads<String, UserAccess> {
    RecentReads::new(Duration::from_secs(1), 10_000)
}

/// Unrevoked API tokens by the hash of their secret, trusted for a second after they were
/// read like users' access: integrations call on every sync and alert. Expiry is checked on
/// every request.
pub fn recent_api_tokens() -> RecentReads<String, ApiToken> {
    RecentReads::new(Duration::from_secs(1), 10_000)
}

/// Marks a request run only to check that its caller may still make it (an idempotent replay):
/// the credential extractors stop it with `ApiError::AuthorisationProbe` once the caller passed
/// their checks, before any handler body runs.
#[derive(Debug, Clone, Copy)]
pub struct AuthorisationProbe;

pub(crate) fn probe_stops(req: &HttpRequest) -> ApiResult<()> {
    if req.extensions().contains::<AuthorisationProbe>() {
        return Err(ApiError::AuthorisationProbe);
    }
    Ok(())
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<Caller>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let caller = authenticate(&req).await?;
            probe_stops(&req)?;
            Ok(caller)
        })
    }
}

/// A set of roles an endpoint admits; `admin` is always admitted.
pub trait Policy {
    const ROLES: &'static [Role];
    const DESCRIPTION: &'static str;
}

/// Administrators only.
pub struct Admins;
impl Policy for Admins {
    const ROLES: &'static [Role] = &[Role::Admin];
    const DESCRIPTION: &'static str = "admin";
}

/// Staff who work tickets or manage practices.
pub struct Staff;
impl Policy for Staff {
    const ROLES: &'static [Role] = &[Role::Agent, Role::ChangeManager, Role::ProblemManager];
    const DESCRIPTION: &'static str = "agent, change_manager, problem_manager or admin";
}

/// Consumers of the event feed: staff and integrations.
pub struct FeedReaders;
impl Policy for FeedReaders {
    const ROLES: &'static [Role] = &[
        Role::Agent,
        Role::ChangeManager,
        Role::ProblemManager,
        Role::Integration,
    ];
    const DESCRIPTION: &'static str =
        "agent, change_manager, problem_manager, integration or admin";
}

/// Change managers (and admins): approval policies, templates, freeze windows.
pub struct ChangeManagers;
impl Policy for ChangeManagers {
    const ROLES: &'static [Role] = &[Role::ChangeManager];
    const DESCRIPTION: &'static str = "change_manager or admin";
}

/// Readers of the CMDB: staff and integrations, like the event feed's readers.
pub type CmdbReaders = FeedReaders;

/// Writers of configuration items and relationships: discovery and sync tools (integration),
/// change managers, who put changes into the CMDB, and admins. Agents read.
pub struct CmdbWriters;
impl Policy for CmdbWriters {
    const ROLES: &'static [Role] = &[Role::ChangeManager, Role::Integration];
    const DESCRIPTION: &'static str = "change_manager, integration or admin";
}

/// Managers of outbound webhooks: integrations and admins.
pub struct WebhookManagers;
impl Policy for WebhookManagers {
    const ROLES: &'static [Role] = &[Role::Integration];
    const DESCRIPTION: &'static str = "integration or admin";
}

/// An authenticated caller holding one of `P`'s roles; rejects with 403 before the handler runs.
pub struct Authorized<P: Policy> {
    pub caller: Caller,
    policy: PhantomData<P>,
}

impl<P: Policy> std::ops::Deref for Authorized<P> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<P: Policy + 'static> FromRequest for Authorized<P> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<Self>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let caller = authenticate(&req).await?;
            if !caller.has_any(P::ROLES) {
                return Err(ApiError::Forbidden(format!(
                    "this action requires the role {}",
                    P::DESCRIPTION
                )));
            }
            probe_stops(&req)?;
            Ok(Authorized {
                caller,
                policy: PhantomData,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(verify_password(Some(&hash), "correct horse battery"));
        assert!(!verify_password(Some(&hash), "wrong horse battery"));
        assert!(!verify_password(None, "correct horse battery"));
        assert!(!verify_password(Some("not a hash"), "x"));
    }

    fn stored_key(
        kid: &str,
        secret: &str,
        age_seconds: i64,
        retires_in: Option<i64>,
    ) -> signing_keys::SigningKey {
        let now = persistence::now_utc();
        signing_keys::SigningKey {
            kid: kid.into(),
            secret: Some(secret.into()),
            created_at: now - chrono::Duration::seconds(age_seconds),
            retires_at: retires_in.map(|s| now + chrono::Duration::seconds(s)),
        }
    }

    fn key_set(keys: &TokenKeys, stored: Vec<signing_keys::SigningKey>) -> KeySet {
        keys.usable(stored, persistence::now_utc())
    }

    fn kid_of(token: &str) -> Option<String> {
        jsonwebtoken::decode_header(token).unwrap().kid
    }

    #[test]
    fn tokens_round_trip_and_other_algorithms_are_refused() {
        let keys = TokenKeys::new(None, 60);
        let set = key_set(
            &keys,
            vec![stored_key(
                "k1",
                "a test secret of enough length!!",
                600,
                None,
            )],
        );
        let token = keys.sign(&set, "u1", &[Role::Agent]).unwrap();
        assert_eq!(keys.verify_with(&set, &token).unwrap().sub, "u1");
        assert_eq!(kid_of(&token).as_deref(), Some("k1"));

        let other = key_set(
            &keys,
            vec![stored_key(
                "k1",
                "another secret of enough length!",
                600,
                None,
            )],
        );
        assert!(keys.verify_with(&other, &token).is_none());

        // alg: none, same claims, no signature.
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = token.split('.').nth(1).unwrap();
        let unsigned = format!(
            "{}.{payload}.",
            engine.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#)
        );
        assert!(keys.verify_with(&set, &unsigned).is_none());

        let expired = TokenKeys::new(None, -120);
        let old = expired.sign(&set, "u1", &[Role::Agent]).unwrap();
        assert!(keys.verify_with(&set, &old).is_none());
    }

    #[test]
    fn a_new_key_signs_once_published_and_old_keys_verify_until_they_retire() {
        let keys = TokenKeys::new(None, 60);
        let before = key_set(
            &keys,
            vec![stored_key(
                "old",
                "the old secret of enough length!!",
                600,
                None,
            )],
        );
        let old_token = keys.sign(&before, "u1", &[Role::Agent]).unwrap();

        // Just rotated: the new key verifies but does not sign yet.
        let rotating = vec![
            stored_key("old", "the old secret of enough length!!", 600, Some(60)),
            stored_key("new", "the new secret of enough length!!", 0, None),
        ];
        let set = key_set(&keys, rotating.clone());
        assert_eq!(
            kid_of(&keys.sign(&set, "u1", &[]).unwrap()).as_deref(),
            Some("old")
        );

        // Published: the new key signs, the old one still verifies.
        let mut published = rotating;
        published[1].created_at -= chrono::Duration::seconds(3);
        let set = key_set(&keys, published.clone());
        let new_token = keys.sign(&set, "u1", &[]).unwrap();
        assert_eq!(kid_of(&new_token).as_deref(), Some("new"));
        assert!(keys.verify_with(&set, &old_token).is_some());
        assert!(keys.verify_with(&set, &new_token).is_some());

        // Retired (in the past, though still in a set read a moment ago): refused.
        published[0].retires_at = Some(persistence::now_utc() - chrono::Duration::seconds(1));
        let set = key_set(&keys, published);
        assert!(keys.verify_with(&set, &old_token).is_none());
        assert!(keys.verify_with(&set, &new_token).is_some());

        // A kid no live key has.
        let set = key_set(
            &keys,
            vec![stored_key(
                "new",
                "the new secret of enough length!!",
                600,
                None,
            )],
        );
        assert!(keys.verify_with(&set, &old_token).is_none());
    }

    #[test]
    fn the_configured_secret_is_a_key_whose_secret_stays_in_the_environment() {
        let secret = "integration-tests-known-signing-secret-0123456789";
        let keys = TokenKeys::new(Some(secret), 60);
        let kid = keys.configured_kid().unwrap().to_owned();
        assert!(kid.starts_with("env-") && !kid.contains(&secret[..8]));
        let mut env_key = stored_key(&kid, "", 600, None);
        env_key.secret = None;
        let set = key_set(&keys, vec![env_key.clone()]);
        let token = keys.sign(&set, "u1", &[]).unwrap();
        assert_eq!(kid_of(&token), Some(kid));
        // A node configured with another secret cannot use that key.
        let elsewhere = TokenKeys::new(Some("another-configured-signing-secret-9876543210"), 60);
        let set = key_set(&elsewhere, vec![env_key]);
        assert!(set.verifying.is_empty() && set.signing.is_none());
    }

    #[test]
    fn api_tokens_are_prefixed_and_stored_only_as_a_hash() {
        let (secret, hash) = generate_api_token();
        assert!(secret.starts_with(API_TOKEN_PREFIX));
        assert_eq!(hash, hash_api_token(&secret));
        assert!(!hash.contains(&secret[API_TOKEN_PREFIX.len()..]));
    }
}
