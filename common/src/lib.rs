//! Everything two or more shoplog crates share.
//!
//! One module per idea, so that a reader looking for "how are ids leased" or "how does an error
//! become a 4xx" finds exactly one place:
//!
//! | module | idea |
//! |---|---|
//! | [`config`] | configuration from the environment, with defaults that match `shoplog up` |
//! | [`telemetry`] | the one `tracing` subscriber every binary installs |
//! | [`error`] | the API error type and its mapping to status codes and JSON bodies |
//! | [`http`] | the warp server scaffolding: routing by path segments, metrics, health |
//! | [`metrics`] | Prometheus counters and latency histograms |
//! | [`idempotency`] | `Idempotency-Key`: the header, its records, exactly-once retries of POSTs |
//! | [`ids`] | the id pool leased in blocks from the ID service, with local ULID fallback |
//! | [`db`] | connecting to a service's Redis and running its Lua scripts |
//! | [`consumer`] | consuming another service's log through a consumer group (the saga's delivery) |
//! | [`keys`] | every Redis key, stream and channel name: the one place that formats them |
//! | [`partition`] | which partition an id belongs to, `P` per service, the hash tags |
//! | [`log`] | the service logs (Redis Streams): entries, paged reads |
//! | [`archive`] | the log archive (segment files) and the one history of archive + live log |
//! | [`event`] | the log entries decoded into one `Event` type |
//! | [`counter`] | the shared "entity with a non-negative counter" scripts (stock, credit) |
//! | [`batch`] | the deterministic generator behind `batch_init` (used by services and replay) |
//! | [`saga`] | the saga's participants table, states, records and shared transitions |
//! | [`lua`] | Lua snippets shared by several scripts |
//! | [`lock`] | Redlock over the lock nodes, with bounded acquisition and explicit release |
//! | [`validate`] | parsing of path parameters (ids and amounts) |

/// Every shoplog binary allocates with mimalloc (declared here, in the one crate they all link,
/// so that no binary is left on another allocator). Services, the log parser and the CLI all
/// allocate a small string per field of every log entry, Redis reply and request: under glibc's
/// allocator `malloc`/`free` took ~45% of a 1M-checkout audit's CPU and ~25% of the log parser's
/// while archiving (perf); mimalloc serves that pattern at a fraction of the cost
/// (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod archive;
pub mod batch;
pub mod cluster_link;
pub mod config;
pub mod consumer;
pub mod counter;
pub mod db;
pub mod error;
pub mod event;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod keys;
pub mod lock;
pub mod log;
pub mod lua;
pub mod metrics;
pub mod partition;
pub mod runtime;
pub mod saga;
pub mod telemetry;
pub mod validate;

#[cfg(feature = "testing")]
pub mod testing;
