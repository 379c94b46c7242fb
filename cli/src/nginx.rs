//! The gateway's nginx configuration, for both deployments: the native stack of `shoplog up` and
//! the container stack of `docker-compose.yml`. Both route `/orders/ /stock/ /payment/ /ids/` to
//! the services, answer JSON for everything else (unknown routes, nginx's own 400/414, a service
//! with no live replica), and differ only in where nginx writes its files and how it finds the
//! replicas:
//!
//! - **native** ([`config`]): one `upstream` per service listing every replica's loopback port,
//!   keep-alive connections, everything nginx writes under the data directory (no root needed);
//! - **containers** ([`container_config`]): each service by its compose name, re-resolved through
//!   Docker's DNS every second, so replicas added by `--scale`, removed, or restarted with a new
//!   address are found without a reload. The result is committed as `deploy/docker/nginx.conf`
//!   (a test keeps it equal to what this module renders).

use std::fmt::Write;

use common::config::defaults;

use crate::layout::StackSettings;

/// The path prefixes the gateway routes, each with the compose service that serves it and the
/// port that service listens on.
pub const ROUTES: [(&str, &str, u16); 4] = [
    ("orders", "order", defaults::ORDER_PORT),
    ("stock", "stock", defaults::STOCK_PORT),
    ("payment", "payment", defaults::PAYMENT_PORT),
    ("ids", "ids", defaults::IDS_PORT),
];

/// Where nginx keeps its pid file and temporary files, and where it logs errors.
struct Files {
    pid: String,
    temp_dir: String,
    error_log: String,
}

/// How nginx reaches each prefix's replicas.
enum Upstreams {
    /// Fixed loopback ports, one `upstream` block per prefix.
    Loopback(Vec<(&'static str, Vec<u16>)>),
    /// A host name re-resolved through `resolver` (Docker's embedded DNS).
    Dns {
        resolver: &'static str,
        hosts: Vec<(&'static str, String)>,
    },
}

/// Renders `nginx.conf` for the native stack.
pub fn config(s: &StackSettings, run_as_root: bool) -> String {
    let dir = s.component_dir("gateway").display().to_string();
    let files = Files {
        pid: format!("{dir}/nginx.pid"),
        temp_dir: format!("{dir}/tmp"),
        error_log: s.log_file("gateway").display().to_string(),
    };
    let listen = format!("127.0.0.1:{}", s.gateway_port);
    render(
        &files,
        &Upstreams::Loopback(s.upstreams()),
        &listen,
        run_as_root,
    )
}

/// Renders `nginx.conf` for the gateway container (`deploy/docker/nginx.conf`): nginx runs as an
/// unprivileged user, listens on 8000, keeps its temporary files in `/var/cache/shoplog-gateway`
/// (made by the gateway image) and logs to stderr.
pub fn container_config() -> String {
    let files = Files {
        pid: "/tmp/nginx.pid".into(),
        temp_dir: "/var/cache/shoplog-gateway".into(),
        error_log: "/dev/stderr".into(),
    };
    let hosts = ROUTES
        .iter()
        .map(|(prefix, host, port)| (*prefix, format!("{host}:{port}")))
        .collect();
    let upstreams = Upstreams::Dns {
        resolver: "127.0.0.11",
        hosts,
    };
    let header = "# Rendered by cli/src/nginx.rs (`container_config`); do not edit by hand.\n\
                  # `SHOPLOG_BLESS=1 cargo test -p cli nginx` rewrites it after a change there.\n";
    format!(
        "{header}{}",
        render(
            &files,
            &upstreams,
            &defaults::GATEWAY_PORT.to_string(),
            false
        )
    )
}

fn render(files: &Files, upstreams: &Upstreams, listen: &str, run_as_root: bool) -> String {
    let Files {
        pid,
        temp_dir: tmp,
        error_log,
    } = files;
    let mut out = String::new();
    if run_as_root {
        out.push_str("user root;\n");
    }
    let _ = write!(
        out,
        r#"worker_processes auto;
daemon off;
pid {pid};
error_log {error_log} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_read_timeout 60s;
    keepalive_requests 100000;
"#
    );
    let mut locations = Vec::new();
    match upstreams {
        Upstreams::Loopback(ports_by_prefix) => {
            for (prefix, ports) in ports_by_prefix {
                let _ = writeln!(out, "    upstream {prefix} {{");
                for p in ports {
                    // max_fails=0: never quarantine a replica. A dead one costs a refused connect
                    // on loopback before nginx tries the next; quarantine would instead turn a
                    // replica that is just starting (or restarting) into seconds of 503s, per
                    // nginx worker.
                    let _ = writeln!(out, "        server 127.0.0.1:{p} max_fails=0;");
                }
                out.push_str("        keepalive 256;\n    }\n");
                locations.push((*prefix, format!("proxy_pass http://{prefix};")));
            }
        }
        Upstreams::Dns { resolver, hosts } => {
            // A variable in proxy_pass makes nginx resolve the name per request (cached for
            // `valid`), and use every address it gets in turn: a refused or timed-out connect
            // moves on to the next replica (the request was not sent, so even a POST is safe).
            let _ = writeln!(out, "    resolver {resolver} valid=1s ipv6=off;");
            out.push_str("    resolver_timeout 2s;\n    proxy_connect_timeout 2s;\n");
            for (prefix, host) in hosts {
                locations.push((
                    *prefix,
                    format!("set $upstream_{prefix} {host}; proxy_pass http://$upstream_{prefix};"),
                ));
            }
        }
    }
    let _ = writeln!(out, "    server {{\n        listen {listen};");
    for (prefix, pass) in &locations {
        let _ = writeln!(out, "        location /{prefix}/ {{ {pass} }}");
        // Without this nginx answers `/stock` with an HTML redirect to `/stock/`.
        let _ = writeln!(
            out,
            "        location = /{prefix} {{ default_type application/json; return 404 '{{\"error\": \"no route for /{prefix}\"}}'; }}"
        );
    }
    out.push_str(
        r#"        # nginx itself, not the services behind it: for health checks of the gateway.
        location = /gateway/health {
            default_type application/json;
            return 200 '{"status": "ok"}';
        }
        location / {
            default_type application/json;
            return 404 '{"error": "no route: the gateway serves /orders/, /stock/, /payment/ and /ids/"}';
        }
        # Requests nginx itself refuses (a NUL byte in the path, ...) get a JSON body too.
        error_page 400 /__bad_request;
        location = /__bad_request {
            internal;
            default_type application/json;
            return 400 '{"error": "bad request: the gateway cannot parse this request"}';
        }
        error_page 414 /__too_long;
        location = /__too_long {
            internal;
            default_type application/json;
            return 414 '{"error": "the path is too long"}';
        }
        error_page 502 503 504 = @unavailable;
        location @unavailable {
            default_type application/json;
            return 503 '{"error": "no replica of this service is answering; retry later"}';
        }
    }
}
"#,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/docker/nginx.conf` is what [`container_config`] renders, so the two gateways
    /// cannot drift apart. `SHOPLOG_BLESS=1` rewrites the file.
    #[test]
    fn the_committed_container_config_is_the_rendered_one() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker/nginx.conf");
        let rendered = container_config();
        if std::env::var_os("SHOPLOG_BLESS").is_some() {
            std::fs::write(&path, &rendered).expect("write deploy/docker/nginx.conf");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == rendered,
            "{} differs from cli/src/nginx.rs's container_config(); run `SHOPLOG_BLESS=1 cargo test -p cli nginx` and commit the file",
            path.display()
        );
    }

    #[test]
    fn every_route_is_resolved_by_name_in_the_container_config() {
        let conf = container_config();
        assert!(conf.contains("resolver 127.0.0.11"));
        for (prefix, host, port) in ROUTES {
            assert!(
                conf.contains(&format!("set $upstream_{prefix} {host}:{port};")),
                "{prefix}: {conf}"
            );
        }
        assert!(
            !conf.contains("upstream orders {"),
            "no static upstreams in containers"
        );
        assert!(conf.contains("listen 8000;"));
    }

    #[test]
    fn the_native_config_lists_every_replica() {
        let s = StackSettings {
            data_dir: "/tmp/x".into(),
            port_offset: 0,
            gateway_port: 8000,
            replicas: 2,
            shards: 0,
        };
        let conf = config(&s, false);
        assert!(conf.contains("server 127.0.0.1:8101 max_fails=0;"));
        assert!(conf.contains("server 127.0.0.1:8111 max_fails=0;"));
        assert!(conf.contains("listen 127.0.0.1:8000;"));
        assert!(conf.contains("location /orders/ { proxy_pass http://orders; }"));
        assert!(!conf.contains("resolver"));
    }
}
