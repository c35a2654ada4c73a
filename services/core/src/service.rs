//! The start-up every long-running service binary shares: signal handling
//! (SIGTERM drains), the store and the queue its config names, and the ops
//! endpoint (`/metrics`, `/health/*`) with readiness tied to both.

use std::net::SocketAddr;

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;
use crate::ops_http::{self, Readiness};
use crate::queue::{open_queue, QueueError, QueueHandle};
use crate::shutdown;
use crate::storage::{open_store_with, Store, StoreError};
use crate::worker::WorkerContext;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error("opening the queue: {0}")]
    Queue(#[from] QueueError),
    #[error("starting the ops endpoint on {listen}: {source}")]
    Ops {
        listen: String,
        source: std::io::Error,
    },
}

/// A started service: its store, its queue and the token its signal
/// handlers cancel.
#[derive(Clone, Debug)]
pub struct Service {
    pub store: Store,
    pub queue: QueueHandle,
    pub shutdown: CancellationToken,
}

impl Service {
    /// Installs the signal handlers and opens the store and the queue.
    pub async fn open<S>(config: &ServiceConfig<S>) -> Result<Self, StartError> {
        let shutdown = shutdown::install_signal_handlers();
        let store = open_store_with(&config.store).await?;
        let queue = open_queue(&config.queue).await?;
        Ok(Self {
            store,
            queue,
            shutdown,
        })
    }

    /// [`Service::open`], then the ops endpoint on `ops.listen`.
    pub async fn start<S>(config: &ServiceConfig<S>) -> Result<Self, StartError> {
        let service = Self::open(config).await?;
        service.serve_ops(config, Router::new()).await?;
        Ok(service)
    }

    /// Serves the ops endpoint on `ops.listen`, with the service's own
    /// `routes` beside it, until shutdown.
    pub async fn serve_ops<S>(
        &self,
        config: &ServiceConfig<S>,
        routes: Router,
    ) -> Result<SocketAddr, StartError> {
        let readiness = Readiness {
            store: Some(self.store.clone()),
            queue: Some(self.queue.clone()),
            draining: self.shutdown.clone(),
        };
        ops_http::serve_with(&config.ops.listen, readiness, routes, self.shutdown.clone())
            .await
            .map_err(|source| StartError::Ops {
                listen: config.ops.listen.clone(),
                source,
            })
    }

    /// What the consume loop needs, from this service and its config.
    pub fn worker_context<S>(&self, config: &ServiceConfig<S>) -> WorkerContext {
        WorkerContext {
            queue: self.queue.clone(),
            store: self.store.clone(),
            config: config.worker.clone(),
            delivery_limit: config.queue.delivery_limit,
            shutdown: self.shutdown.clone(),
        }
    }
}
