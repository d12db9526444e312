//! A proxy on port 0 with its own data directory and a clock the test moves.

use std::net::SocketAddr;
use std::sync::Arc;

use meshcache::{ManualClock, Proxy, Settings};
use tokio::net::TcpListener;

pub struct TestProxy {
    pub proxy: Option<Proxy>,
    pub clock: ManualClock,
    pub settings: Settings,
    _dir: Option<tempfile::TempDir>,
}

impl TestProxy {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with settings adjusted by `f`.
    pub async fn start_with(f: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Self::start_in(dir.path().to_path_buf(), f).await;
        p._dir = Some(dir);
        p
    }

    /// Starts with its data in `dir` (which the caller cleans up).
    pub async fn start_in(dir: std::path::PathBuf, f: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::new("127.0.0.1:0".parse().unwrap(), dir);
        settings.access_log = false;
        f(&mut settings);
        let clock = ManualClock::default();
        let proxy = Self::launch(&settings, &clock).await;
        Self {
            proxy: Some(proxy),
            clock,
            settings,
            _dir: None,
        }
    }

    async fn launch(settings: &Settings, clock: &ManualClock) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Proxy::start_on(settings.clone(), listener, Arc::new(clock.clone()))
            .await
            .expect("start proxy")
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.as_ref().expect("running").addr()
    }

    pub fn cache(&self) -> &meshcache::Cache {
        self.proxy.as_ref().expect("running").cache()
    }

    /// Stops the proxy cleanly and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
        self.proxy = Some(Self::launch(&self.settings, &self.clock).await);
    }

    /// Stops the proxy cleanly.
    pub async fn stop(mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
    }
}
