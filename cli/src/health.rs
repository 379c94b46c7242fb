//! Asking a component whether it is healthy: Redis answers `PING`, a service answers 200 on
//! `/<prefix>/health`, the gateway routes `/orders/health` to a live order replica.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::layout::{Component, Kind};

/// What a health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Answers as it should.
    Ok,
    /// Listens but answers wrongly (a service whose database is down answers 503).
    Unhealthy,
    /// Does not listen.
    Down,
}

/// Checks one component, waiting at most about a second.
pub fn check(c: &Component) -> Health {
    match &c.kind {
        Kind::Redis | Kind::LockNode | Kind::ClusterNode { .. } => redis_ping(c.port),
        Kind::Service { prefix, .. } => http_get(c.port, &format!("/{prefix}/health")),
        Kind::Gateway => http_get(c.port, "/orders/health"),
    }
}

fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    Some(stream)
}

fn redis_ping(port: u16) -> Health {
    let Some(mut s) = connect(port) else {
        return Health::Down;
    };
    let mut buf = [0u8; 64];
    match s.write_all(b"PING\r\n").and_then(|_| s.read(&mut buf)) {
        Ok(n) if buf[..n].starts_with(b"+PONG") => Health::Ok,
        _ => Health::Unhealthy,
    }
}

fn http_get(port: u16, path: &str) -> Health {
    let Some(mut s) = connect(port) else {
        return Health::Down;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 32];
    match s.write_all(req.as_bytes()).and_then(|_| s.read(&mut buf)) {
        Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200") => Health::Ok,
        _ => Health::Unhealthy,
    }
}
