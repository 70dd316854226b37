//! Managing the JWT signing keys: the first key at start-up, and `itsm keys` (rotate, retire,
//! list). Secrets never leave the database: nothing here prints or logs one.

use persistence::{settings, signing_keys, Database, StoreError};

use crate::auth::{generate_kid, generate_signing_secret, TokenKeys};

/// Where the signing secret was kept before keys rotated: adopted as the first key, so that
/// tokens issued before the upgrade keep working until they expire.
const LEGACY_SECRET_SETTING: &str = "jwt_signing_secret";

/// Makes sure a key this node can sign with is live: the configured `ITSM_JWT_SECRET` (added as
/// the newest key the first time it is seen, which rotates to it), or else a stored key (the
/// legacy stored secret, or a new one on a fresh database).
pub async fn ensure_signing_key(db: &Database, tokens: &TokenKeys) -> Result<(), String> {
    let configured = tokens.configured_kid().map(str::to_owned);
    let now = persistence::now_utc();
    let retire_at = tokens.retirement_after_rotation(now);
    let candidate = generate_signing_secret();
    let kid = generate_kid();
    let checked = configured.clone();
    let stored = db
        .write(move |conn| -> Result<(), StoreError> {
            signing_keys::wipe_retired(conn, now)?;
            if holds_signing_key(conn, configured.as_deref(), now)? {
                return Ok(());
            }
            match configured {
                Some(configured) => {
                    signing_keys::rotate(conn, &configured, None, now, retire_at)?;
                }
                None => {
                    let secret = settings::get(conn, LEGACY_SECRET_SETTING)?.unwrap_or(candidate);
                    signing_keys::rotate(conn, &kid, Some(&secret), now, retire_at)?;
                }
            }
            Ok(())
        })
        .await;
    if let Err(error) = stored {
        // A read-only database still serves reads: the keys it holds are enough to sign with.
        let read_only = error.outage() == Some(persistence::Outage::ReadOnly);
        let held = read_only
            && db
                .read(move |conn| holds_signing_key(conn, checked.as_deref(), now))
                .await
                .unwrap_or(false);
        if !held {
            return Err(format!("cannot store the signing key: {error}"));
        }
        log::warn!("the database takes no writes: signing with the keys it holds");
    }
    tokens.forget();
    Ok(())
}

/// Whether the database holds the key this node signs with: the configured one, or else a
/// live stored key.
fn holds_signing_key(
    conn: &mut persistence::DbConnection,
    configured: Option<&str>,
    now: chrono::NaiveDateTime,
) -> Result<bool, StoreError> {
    match configured {
        Some(configured) => signing_keys::exists(conn, configured),
        None => Ok(signing_keys::live(conn, now)?
            .iter()
            .any(|key| key.secret.is_some())),
    }
}

/// A rotation: the new key's kid, and when the keys signing until now retire.
pub struct Rotated {
    pub kid: String,
    pub previous_retire_at: chrono::NaiveDateTime,
}

/// Adds a new stored key; nodes sign with it once it is published (within
/// `KEY_PUBLICATION_DELAY`), and the keys that signed before retire once their last token can
/// have expired.
pub async fn rotate(db: &Database, tokens: &TokenKeys) -> Result<Rotated, StoreError> {
    let now = persistence::now_utc();
    let previous_retire_at = tokens.retirement_after_rotation(now);
    let kid = generate_kid();
    let secret = generate_signing_secret();
    let new_kid = kid.clone();
    db.write(move |conn| {
        signing_keys::rotate(conn, &new_kid, Some(&secret), now, previous_retire_at)
    })
    .await?;
    tokens.forget();
    Ok(Rotated {
        kid,
        previous_retire_at,
    })
}

/// Retires `kid` at once (a leaked key); `Ok(false)` when no live key has it.
pub async fn retire(db: &Database, kid: &str) -> Result<bool, StoreError> {
    let kid = kid.to_owned();
    let now = persistence::now_utc();
    db.write(move |conn| signing_keys::retire_now(conn, &kid, now))
        .await
}

/// One line per key, without its secret: kid, created, state.
pub async fn describe(db: &Database) -> Result<Vec<String>, StoreError> {
    let now = persistence::now_utc();
    let keys = db.read(signing_keys::all).await?;
    Ok(keys
        .iter()
        .map(|key| {
            let state = match key.retires_at {
                None => "live".to_owned(),
                Some(at) if at > now => format!("live, retires at {}Z", at.format("%FT%T")),
                Some(at) => format!("retired at {}Z", at.format("%FT%T")),
            };
            let held = if key.secret.is_none() && key.is_live(now) {
                " (secret in ITSM_JWT_SECRET)"
            } else {
                ""
            };
            format!(
                "{}  created {}Z  {state}{held}",
                key.kid,
                key.created_at.format("%FT%T")
            )
        })
        .collect())
}
