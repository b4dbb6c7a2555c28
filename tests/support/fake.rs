//! The one way tests stand up a fake vendor: an axum router served on 127.0.0.1:0 for as long as
//! the test's runtime lives, which records every request it receives and can stop listening
//! (connections refused, as during an outage) and listen again on the same port.
//!
//! ```ignore
//! let fake = fake::serve(Router::new().fallback(|| async { "ok" })).await;
//! // point Cordon at fake.base, then:
//! assert_eq!(fake.count("POST /isolate/"), 1);
//! ```
//!
//! A fake whose answers must name its own address binds first: [`Port::bind`], then
//! [`Port::serve`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::oneshot;

/// One request a fake received, as it came.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Recorded {
    /// `METHOD /path?query`
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A listening port of 127.0.0.1, not yet serving.
pub struct Port {
    listener: tokio::net::TcpListener,
    /// `http://127.0.0.1:<port>`
    pub base: String,
}

impl Port {
    pub async fn bind() -> Port {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        Port { listener, base }
    }

    /// Serves `router` on this port.
    pub fn serve(self, router: Router) -> FakeServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let server = FakeServer {
            base: self.base,
            addr: self.listener.local_addr().unwrap(),
            router: router.layer(axum::middleware::from_fn_with_state(
                requests.clone(),
                record,
            )),
            requests,
            stop: Arc::default(),
        };
        server.run(self.listener);
        server
    }
}

/// Serves `router` on a free port of 127.0.0.1.
pub async fn serve(router: Router) -> FakeServer {
    Port::bind().await.serve(router)
}

/// A fake vendor's server (see the module notes). Clones share the server.
#[derive(Clone)]
pub struct FakeServer {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub addr: SocketAddr,
    router: Router,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl FakeServer {
    fn run(&self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        *self.stop.lock().unwrap() = Some(stop);
        let router = self.router.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    if stopped.await.is_err() {
                        // Every handle dropped without `refuse`: serve on, as long as the runtime.
                        std::future::pending::<()>().await;
                    }
                })
                .await
                .unwrap();
        });
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests so far have a [`Recorded::line`] containing `what`.
    pub fn count(&self, what: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.line().contains(what))
            .count()
    }

    /// Stops listening: connections are refused until [`FakeServer::accept`].
    pub async fn refuse(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        // Until the port is closed, a connect would still succeed.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the fake kept accepting connections");
    }

    /// Listens again on the same port.
    pub async fn accept(&self) {
        for _ in 0..100 {
            if let Ok(listener) = tokio::net::TcpListener::bind(self.addr).await {
                self.run(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot listen on {} again", self.addr);
    }
}

/// Keeps a copy of the request, then hands it on.
async fn record(
    State(requests): State<Arc<Mutex<Vec<Recorded>>>>,
    request: Request,
    next: Next,
) -> Response {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("the request body arrives");
    requests.lock().unwrap().push(Recorded {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        at,
    });
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// The HTTP client a fake forwards requests to Prism with. It keeps no idle connection past four
/// seconds: Prism (Node's HTTP server) closes one idle for five, and a request sent on a
/// connection as it closes fails ("error sending request") although nothing was wrong with it.
pub fn prism_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .expect("an HTTP client")
}
