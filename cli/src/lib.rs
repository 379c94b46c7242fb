//! The `shoplog` CLI as a library, so that its pieces can be tested.
//!
//! | module | job |
//! |---|---|
//! | [`cluster`] | the local Redis Clusters of `shoplog up --cluster`: forming them, each node's role |
//! | [`layout`] | which components the local stack has, their ports, directories and environment |
//! | [`process`] | starting, finding and stopping component processes (pid files) |
//! | [`supervise`] | restarting components that exit (the loop of `up` and of `shoplog supervise`) |
//! | [`health`] | asking a component whether it is healthy |
//! | [`nginx`] | the gateway's configuration |
//! | [`commands`] | one file per subcommand |
//! | [`cost`] | what a checkout costs: CPU, Redis commands and round trips per component |
//! | [`output`] | tables, colour only on a terminal, JSON for machines |

pub mod cluster;
pub mod commands;
pub mod cost;
pub mod health;
pub mod layout;
pub mod nginx;
pub mod output;
pub mod process;
pub mod supervise;
