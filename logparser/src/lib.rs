//! The log parser: everything that reads the service logs and saga records as a whole.
//!
//! | module | job |
//! |---|---|
//! | [`replay`] | rebuild a service's state from its history (archive + log); compare with the database |
//! | [`audit`] | check every invariant of DESIGN.md over the logs and databases |
//! | [`spill`] | bounded memory for the audit: buckets of keys, a partition's history spooled to disk |
//! | [`recovery`] | abort stalled sagas, re-drive unconfirmed compensations (the daemon's passes) |
//! | [`sagas`] | read the order-side saga records |
//! | [`saga_index`] | the saga list's index in order-db (kept by recovery, read by the console and `shoplog sagas`) |
//! | [`timeline`] | one saga's entries across the three logs |
//! | [`delivery`] | consumer-group lag, stuck entries, dead letters |
//! | [`lease`] | one active daemon at a time (Redlock lease) |
//! | [`archive`] | move acknowledged, final, old log entries and saga records into the archive |
//! | [`sightings`] | what the recovery pass read of `log:order`, kept for the archive's retirement queue |
//! | [`finality`] | the sagas the archiving pass has seen final, so that it asks once per saga |
//! | [`console`] | the operator console at `/console/`: pages, JSON API, actions (served by the daemon) |
//! | [`dbs`] | connections to the three databases |
//!
//! The daemon (`logparser` binary) and the `shoplog` CLI both use this library, so "what a log
//! entry means" is written once.

pub mod archive;
pub mod audit;
pub mod audit_hold;
pub mod console;
pub mod dbs;
pub mod delivery;
pub mod finality;
pub mod lease;
pub mod recovery;
pub mod replay;
pub mod saga_index;
pub mod sagas;
pub mod sightings;
pub mod spill;
pub mod timeline;
