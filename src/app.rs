//! The application state shared by every handler.

use std::sync::Arc;

use crate::config::Config;
use crate::domain::{Clock, SystemClock};
use crate::error::Result;
use crate::store::{Store, StoreOptions};

/// Everything a request needs: configuration, the store and the clock.
pub struct App {
    /// Configuration in force.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The source of "now".
    pub clock: Arc<dyn Clock>,
}

impl App {
    /// Opens the store named by the configuration (migrating it) with the system clock.
    pub fn open(config: Config) -> Result<Arc<Self>> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Same, with a given clock (tests move time with it).
    pub fn open_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Self>> {
        let store = Store::open(
            &config.database.0,
            StoreOptions {
                read_connections: config.read_connections.0,
                writer_max_batch: config.writer_max_batch.0,
            },
        )?;
        Ok(Arc::new(Self {
            config,
            store,
            clock,
        }))
    }
}
