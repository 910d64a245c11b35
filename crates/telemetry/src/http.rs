//! `/metrics`, `/livez` and `/readyz` over HTTP/1.1 (hyper).
//!
//! - `/metrics`: Prometheus text format (version 0.0.4).
//! - `/livez`: 200 while the process runs and serves this endpoint.
//! - `/readyz`: 200 when the node can take traffic (the role decides; see `docs/operations.md`),
//!   503 otherwise, so a Kubernetes Service sends nothing to a node that is not ready.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Tells `/readyz` whether the node is ready.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The answer to one request.
pub fn answer(method: &Method, path: &str, ready: &Readiness) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match path {
        "/metrics" => respond(StatusCode::OK, "text/plain; version=0.0.4", crate::metrics().encode()),
        "/livez" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" if ready() => respond(StatusCode::OK, "text/plain", "ready\n"),
        "/readyz" => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n"),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Serve the endpoint on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, ready: Readiness, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = answer(req.method(), req.uri().path(), &ready);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let yes: Readiness = Arc::new(|| true);
        let no: Readiness = Arc::new(|| false);
        assert_eq!(answer(&Method::GET, "/livez", &no).status(), StatusCode::OK);
        assert_eq!(answer(&Method::GET, "/readyz", &yes).status(), StatusCode::OK);
        assert_eq!(answer(&Method::GET, "/readyz", &no).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer(&Method::GET, "/nope", &yes).status(), StatusCode::NOT_FOUND);
        assert_eq!(answer(&Method::POST, "/metrics", &yes).status(), StatusCode::METHOD_NOT_ALLOWED);
        let m = answer(&Method::GET, "/metrics", &yes);
        assert_eq!(m.headers()[hyper::header::CONTENT_TYPE], "text/plain; version=0.0.4");
    }
}
