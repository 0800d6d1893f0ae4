//! The API server: configuration, start-up (etcd, watch caches, initial namespaces) and the HTTP router.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use atoll_api::{ApiError, ApiResult, KindInfo, Registry};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::json;

use crate::alloc::{Ranges, parse_port_range};
use crate::cache::WatchCache;
use crate::negotiate::{self, Format};
use crate::request::{Query, Route, route};
use crate::storage::Store;
use crate::{discovery, rest};

/// Settings of `atoll apiserver`.
#[derive(Debug, Clone)]
pub struct Config {
    /// etcd client URLs.
    pub etcd_servers: Vec<String>,
    /// Address to listen on.
    pub bind_address: IpAddr,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// CIDR Service ClusterIPs are allocated from.
    pub service_cluster_ip_range: String,
    /// Range NodePorts are allocated from, e.g. `30000-32767`.
    pub service_node_port_range: String,
    /// Directory for the server's own files.
    pub data_dir: PathBuf,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag has a bad value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// etcd could not be reached.
    #[error("cannot reach etcd at {endpoints}: {message}")]
    Etcd {
        /// The endpoints tried.
        endpoints: String,
        /// What failed.
        message: String,
    },
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address tried.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// What the server serves at one moment: the kinds (built-in and those custom resource definitions
/// add), their watch caches, OpenAPI documents and types. Replaced as a whole when CRDs change;
/// a request works with the snapshot it started with.
pub struct Served {
    /// Served kinds.
    pub registry: Registry,
    /// One watch cache per resource, by `KindInfo::qualified`.
    caches: HashMap<String, Arc<WatchCache>>,
    /// The OpenAPI v3 documents.
    pub openapi: crate::openapi::OpenApi,
    /// The kinds' types, for strategic merge patches and field ownership.
    pub types: atoll_api::strategic::TypeGraph,
    /// What the custom kinds were made from (the accepted CRDs' specs).
    source: serde_json::Value,
}

impl Served {
    /// Builds what `registry` serves, reusing the caches in `old` for resources it already served
    /// and starting caches for new ones.
    fn build(registry: Registry, old: &HashMap<String, Arc<WatchCache>>, store: &Store) -> Served {
        let caches = registry
            .kinds()
            .iter()
            .map(|k| {
                let cache = old
                    .get(&k.qualified())
                    .cloned()
                    .unwrap_or_else(|| WatchCache::start(k.clone(), store.clone()));
                (k.qualified(), cache)
            })
            .collect();
        Served {
            openapi: crate::openapi::OpenApi::build(&registry),
            types: atoll_api::strategic::TypeGraph::of_registry(&registry),
            registry,
            caches,
            source: serde_json::Value::Array(vec![]),
        }
    }
}

/// Shared state of the running server.
pub struct Server {
    served: RwLock<Arc<Served>>,
    /// etcd.
    pub store: Store,
    /// Service IP and node port ranges.
    pub ranges: Ranges,
    /// Turns true when the server shuts down, so long-running watches end.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The HTTP client for kubelets (`pods/log`).
    pub kubelets: crate::podlogs::KubeletClient,
}

impl Server {
    /// What is served now.
    pub fn served(&self) -> Arc<Served> {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// The watch cache of a kind (404 if the kind is no longer served, e.g. its CRD just went).
    pub fn cache(&self, kind: &KindInfo) -> ApiResult<Arc<WatchCache>> {
        self.served()
            .caches
            .get(&kind.qualified())
            .cloned()
            .ok_or_else(|| ApiError::not_found(&kind.group, &kind.plural, ""))
    }
    /// Serves the built-in kinds plus `custom` (made from `source`) from now on: caches of new
    /// resources are loaded first, those of resources no longer served are stopped. Nothing changes
    /// when `source` is what the served kinds were made from.
    pub async fn serve_kinds(
        &self,
        custom: Vec<KindInfo>,
        source: serde_json::Value,
    ) -> ApiResult<()> {
        if self.served().source == source {
            return Ok(());
        }
        let mut registry = atoll_api::kinds::builtin();
        for k in custom {
            registry.add(k);
        }
        let old = self.served();
        let mut served = Served::build(registry, &old.caches, &self.store);
        served.source = source;
        for (name, cache) in &served.caches {
            if !old.caches.contains_key(name) {
                cache.wait_for(1, Duration::from_secs(30)).await?;
            }
        }
        for (name, cache) in &old.caches {
            if !served.caches.contains_key(name) {
                cache.stop();
            }
        }
        *self.served.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(served);
        Ok(())
    }
    /// The namespaces kind.
    pub fn namespaces_kind(&self) -> Arc<KindInfo> {
        self.served()
            .registry
            .get("", "v1", "namespaces")
            .cloned()
            .unwrap_or_else(|| unreachable!("namespaces are always registered"))
    }
    /// A receiver that changes when the server starts shutting down.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }
    /// The current time.
    pub fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// Namespaces that exist from the start.
pub const INITIAL_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// A started server.
pub struct Handle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Shared state.
    pub server: Arc<Server>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Stops serving: ends open watches, lets requests in flight finish (for up to 10 s).
    pub async fn stop(self) {
        self.server.stopping.send_replace(true);
        let _ = self.shutdown.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(10), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Connects to etcd, fills the caches, creates the initial namespaces and starts serving.
pub async fn start(config: Config) -> Result<Handle, StartError> {
    let ranges = Ranges {
        cluster_ips: config
            .service_cluster_ip_range
            .parse()
            .map_err(|e| StartError::Config(format!("--service-cluster-ip-range: {e}")))?,
        node_ports: parse_port_range(&config.service_node_port_range)
            .map_err(|e| StartError::Config(format!("--service-node-port-range: {e}")))?,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        StartError::Config(format!("--data-dir {}: {e}", config.data_dir.display()))
    })?;
    let endpoints = config.etcd_servers.join(",");
    let etcd_err = |e: crate::storage::StorageError| StartError::Etcd {
        endpoints: endpoints.clone(),
        message: e.to_string(),
    };
    let store = Store::connect(&config.etcd_servers)
        .await
        .map_err(etcd_err)?;
    store.current_revision().await.map_err(etcd_err)?;
    let served = Served::build(atoll_api::kinds::builtin(), &HashMap::new(), &store);
    let server = Arc::new(Server {
        served: RwLock::new(Arc::new(served)),
        store: store.clone(),
        ranges,
        stopping: tokio::sync::watch::channel(false).0,
        kubelets: crate::podlogs::kubelet_client(),
    });
    // Each cache has loaded its initial list once its revision is set.
    for cache in server.served().caches.values() {
        cache
            .wait_for(1, Duration::from_secs(30))
            .await
            .map_err(|e| StartError::Etcd {
                endpoints: endpoints.clone(),
                message: e.message,
            })?;
    }
    let ns_kind = server.namespaces_kind();
    for ns in INITIAL_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match server
            .create(
                &ns_kind,
                None,
                obj,
                &mut crate::ops::WriteOpts::internal(false),
            )
            .await
            .map(|c| c.obj)
        {
            Ok(_) => tracing::info!(namespace = ns, "created initial namespace"),
            Err(e) if e.code == 409 => {}
            Err(e) => {
                return Err(StartError::Etcd {
                    endpoints: endpoints.clone(),
                    message: e.message,
                });
            }
        }
    }
    // Custom resources stored before a restart are served from the first request on.
    crate::crd::sync(&server)
        .await
        .map_err(|e| StartError::Etcd {
            endpoints: endpoints.clone(),
            message: e.message,
        })?;
    tokio::spawn(crate::crd::run(server.clone()));
    tokio::spawn(crate::storage::run_compactor(
        store,
        Duration::from_secs(300),
    ));
    let addr = SocketAddr::new(config.bind_address, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    let app = Router::new().fallback(handle).with_state(server.clone());
    let (shutdown, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("server failed: {e}");
        }
    });
    Ok(Handle {
        addr,
        server,
        shutdown,
        task,
    })
}

async fn handle(State(srv): State<Arc<Server>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let started = std::time::Instant::now();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let body = match http_body_util::Limited::new(body, negotiate::MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return negotiate::error(&negotiate::too_large()),
    };
    let accept = negotiate::accept(&parts.headers).to_string();
    let served = srv.served();
    let resp = match route(&served.registry, &path) {
        Err(e) => negotiate::error(&e),
        Ok(r) => match Query::parse(parts.uri.query().unwrap_or("")) {
            Err(e) => negotiate::error(&e),
            Ok(q) => match r {
                Route::Resource(t) if is_stream(&t) => {
                    let client = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
                    crate::podstreams::serve(&srv, &method, &t, &q.raw, &parts.headers, client)
                        .await
                        .unwrap_or_else(|e| negotiate::error(&e))
                }
                r => answer(&srv, r, method.clone(), q, parts.headers, body, &accept).await,
            },
        },
    };
    tracing::debug!(%method, path, status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    resp
}

/// Whether a request is for a streaming subresource (exec, attach, portforward) its kind serves.
fn is_stream(t: &crate::request::Target) -> bool {
    t.sub.as_deref().is_some_and(|s| {
        crate::podstreams::SUBRESOURCES.contains(&s)
            && t.kind.subresources.iter().any(|x| x.name() == s)
    })
}

async fn answer(
    srv: &Arc<Server>,
    r: Route,
    method: Method,
    q: Query,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
    accept: &str,
) -> Response {
    let served = srv.served();
    let get_only = |v: serde_json::Value| {
        if method == Method::GET {
            negotiate::respond(200, &v, &Format::Json)
        } else {
            negotiate::error(&ApiError::method_not_allowed(format!(
                "{method} is not allowed here"
            )))
        }
    };
    match r {
        Route::Resource(t) => rest::serve(srv.clone(), method, t, q, headers, body).await,
        Route::Version => get_only(discovery::version()),
        Route::Health(check) => health(srv, check).await,
        Route::CoreVersions | Route::Groups => {
            let core = matches!(r, Route::CoreVersions);
            match discovery::aggregated_version(accept) {
                Some(v) if method == Method::GET => {
                    let ct = format!(
                        "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
                    );
                    let doc = discovery::aggregated(&served.registry, core, v);
                    let mut resp = negotiate::respond(200, &doc, &Format::Json);
                    if let Ok(h) = HeaderValue::from_str(&ct) {
                        resp.headers_mut().insert(header::CONTENT_TYPE, h);
                    }
                    resp
                }
                _ => get_only(if core {
                    discovery::core_versions()
                } else {
                    discovery::groups(&served.registry)
                }),
            }
        }
        Route::Group(g) => match discovery::group(&served.registry, &g) {
            Some(v) => get_only(v),
            None => not_found(),
        },
        Route::GroupVersion(g, v) => match discovery::resource_list(&served.registry, &g, &v) {
            Some(doc) => get_only(doc),
            None => not_found(),
        },
        Route::OpenApi(None) => match method {
            Method::GET => negotiate::raw(200, served.openapi.root(), "application/json"),
            _ => get_only(serde_json::Value::Null),
        },
        Route::OpenApi(Some(path)) => {
            let hash = q.hash.as_deref();
            match served.openapi.document(&path, hash) {
                Some((doc, immutable)) if method == Method::GET => {
                    let mut resp = negotiate::raw(200, doc, "application/json");
                    let cache = if immutable {
                        "public, immutable"
                    } else {
                        "no-cache, private"
                    };
                    resp.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
                    resp
                }
                Some(_) => get_only(serde_json::Value::Null),
                None => not_found(),
            }
        }
        Route::NotFound => not_found(),
    }
}

fn not_found() -> Response {
    let mut e = ApiError::bad_request("the server could not find the requested resource");
    e.code = 404;
    e.reason = "NotFound";
    negotiate::error(&e)
}

async fn health(srv: &Server, check: &str) -> Response {
    let text = |code: u16, body: &'static str| {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() =
            axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if check.starts_with("ready") {
        let etcd = tokio::time::timeout(Duration::from_secs(2), srv.store.current_revision()).await;
        if !matches!(etcd, Ok(Ok(_))) {
            return text(
                503,
                "[-]etcd failed: etcd does not answer\nreadyz check failed\n",
            );
        }
        if !srv.served().caches.values().all(|c| c.ready()) {
            return text(
                503,
                "[-]watch-cache failed: not yet loaded\nreadyz check failed\n",
            );
        }
    }
    text(200, "ok")
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), StartError> {
    if !config.bind_address.is_loopback() {
        tracing::warn!(address = %config.bind_address, "serving WITHOUT authentication on a non-loopback address: anyone who reaches it owns the cluster");
    } else {
        tracing::info!(
            "no authentication yet: listening on loopback only ({})",
            config.bind_address
        );
    }
    let handle = start(config).await?;
    tracing::info!(address = %handle.addr, "API server listening");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| StartError::Config(e.to_string()))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    handle.stop().await;
    Ok(())
}
