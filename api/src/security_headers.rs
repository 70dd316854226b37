//! Headers every response carries for browsers and caches: `nosniff` everywhere, `no-store` on
//! answers to authenticated requests (a shared cache must never keep one caller's data), a
//! strict Content-Security-Policy on the API documentation, and HSTS when the service is
//! configured as served over TLS.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error};

/// Swagger UI is served from this service alone: scripts, styles and images come from here
/// (its stylesheet sets inline styles), nothing may frame it, and it talks only to this API.
const DOCS_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `Strict-Transport-Security`, when configured.
#[derive(Debug, Clone)]
pub struct Hsts(pub Option<HeaderValue>);

impl Hsts {
    pub fn max_age(seconds: Option<u64>) -> Self {
        Self(
            seconds.and_then(|s| {
                HeaderValue::from_str(&format!("max-age={s}; includeSubDomains")).ok()
            }),
        )
    }
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let authenticated = req.headers().contains_key(header::AUTHORIZATION);
    let docs = req.path() == "/docs" || req.path().starts_with("/docs/");
    let hsts = req.app_data::<web::Data<Hsts>>().and_then(|h| h.0.clone());
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if authenticated && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if docs {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_POLICY),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        );
    }
    if let Some(hsts) = hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    Ok(response)
}
