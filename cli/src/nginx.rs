//! The gateway's nginx configuration, for both deployments: the native stack of `shoplog up` and
//! the container stack of `docker-compose.yml`. Both route `/orders/ /stock/ /payment/ /ids/` to
//! the services, answer JSON for everything else (unknown routes, every refusal of nginx's own, a
//! service with no live replica), route `/console/` (the operator console) to the log parser, and
//! differ only in where nginx writes its files and how it finds the replicas:
//!
//! - **native** ([`config`]): one `upstream` per service listing every replica's loopback port,
//!   keep-alive connections, everything nginx writes under the data directory (no root needed);
//! - **containers** ([`container_config`]): each service by its compose name, re-resolved through
//!   Docker's DNS every second, so replicas added by `--scale`, removed, or restarted with a new
//!   address are found without a reload. The result is committed as `deploy/docker/nginx.conf`
//!   (a test keeps it equal to what this module renders).
//!
//! **Hostile input stops at the gateway** (issue 13: no 5xx from bad input, ever). A request body
//! over [`common::http::MAX_BODY_BYTES`] is refused with a JSON 413 (no endpoint takes a body);
//! only the headers the services read ([`FORWARDED_HEADERS`]) go upstream; a request target with
//! bytes the services' HTTP parser refuses is answered here; and every refusal of nginx's own
//! (bad request line, headers too large, TRACE, an unknown transfer coding, HTTP/2.0 on this
//! port) is a JSON 4xx, never nginx's HTML page nor a 5xx. Upstream keep-alive stays safe because
//! the services read every body to its end before answering (`common::http`), so they never
//! close a connection nginx is still writing into.

use std::fmt::Write;
use std::time::Duration;

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

/// The request headers the gateway passes to the services: the only ones they read. Nothing else
/// of a client's headers goes upstream, so hostile headers (thousands of them, huge values) end at
/// nginx's limits, with a JSON 400, instead of reaching the services' HTTP parser, which refuses
/// more than 100 headers with an empty 431. A header a service starts reading must be added here.
pub const FORWARDED_HEADERS: [&str; 1] = ["Idempotency-Key"];

/// Where nginx keeps its pid file and temporary files, and where it logs errors.
struct Files {
    pid: String,
    temp_dir: String,
    error_log: String,
}

/// How nginx reaches each prefix's replicas.
enum Upstreams {
    /// Fixed loopback ports, one `upstream` block per prefix; the log parser's port (the console).
    Loopback(Vec<(&'static str, Vec<u16>)>, u16),
    /// A host name re-resolved through `resolver` (Docker's embedded DNS).
    Dns {
        resolver: &'static str,
        hosts: Vec<(&'static str, String)>,
    },
}

/// How long the gateway waits for the answer to a read (`GET`, `HEAD`) or a keyed POST before it
/// takes the replica for frozen and retries on another: each is one or two database commands, a
/// few milliseconds on a live replica even under load. (An unkeyed POST cannot be retried and
/// keeps nginx's long wait; a checkout waits [`common::config::checkout_read_timeout`].)
pub const RETRYABLE_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Renders `nginx.conf` for the native stack, whose checkouts time out after
/// `checkout_timeout` (`CHECKOUT_TIMEOUT_MS`).
pub fn config(s: &StackSettings, run_as_root: bool, checkout_timeout: Duration) -> String {
    let dir = s.component_dir("gateway").display().to_string();
    let files = Files {
        pid: format!("{dir}/nginx.pid"),
        temp_dir: format!("{dir}/tmp"),
        error_log: s.log_file("gateway").display().to_string(),
    };
    let listen = format!("127.0.0.1:{}", s.gateway_port);
    let logparser = defaults::LOGPARSER_PORT.saturating_add(s.port_offset);
    render(
        &files,
        &Upstreams::Loopback(s.upstreams(), logparser),
        &listen,
        run_as_root,
        checkout_timeout,
    )
}

/// Renders `nginx.conf` for the gateway container (`deploy/docker/nginx.conf`): nginx runs as an
/// unprivileged user, listens on 8000, keeps its temporary files in `/var/cache/shoplog-gateway`
/// (made by the gateway image) and logs to stderr. The file is fixed at build time, so its
/// checkouts' read timeout is the one of the default `CHECKOUT_TIMEOUT_MS`.
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
            false,
            default_checkout_timeout(),
        )
    )
}

/// The services' `CHECKOUT_TIMEOUT_MS` when nothing sets it.
pub fn default_checkout_timeout() -> Duration {
    common::config::Config::from_lookup(0, |_| None)
        .map(|c| c.checkout_timeout)
        .unwrap_or(Duration::from_secs(10))
}

fn render(
    files: &Files,
    upstreams: &Upstreams,
    listen: &str,
    run_as_root: bool,
    checkout_timeout: Duration,
) -> String {
    let checkout_read = common::config::checkout_read_timeout(checkout_timeout).as_millis();
    let retryable_read = RETRYABLE_READ_TIMEOUT.as_millis();
    let Files {
        pid,
        temp_dir: tmp,
        error_log,
    } = files;
    let max_body = common::http::MAX_BODY_BYTES;
    let body_buffer = 2 * max_body;
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
    # No endpoint takes a body (every parameter is in the path): one of at most {max_body} bytes
    # goes on, and the services read and ignore it; a larger one is refused here with a JSON 413
    # before anything reaches a service. Bodies stay in memory (no temporary files: the buffer
    # also holds the last chunk read of a chunked body found too large).
    client_max_body_size {max_body};
    client_body_buffer_size {body_buffer};
    # The request line and headers must fit in 8 KB a line and 32 KB in all (a JSON 400 beyond).
    large_client_header_buffers 4 8k;
    # Only the headers the services read go upstream (cli/src/nginx.rs, FORWARDED_HEADERS).
    proxy_pass_request_headers off;
"#
    );
    for header in FORWARDED_HEADERS {
        let var = header.to_ascii_lowercase().replace('-', "_");
        let _ = writeln!(out, "    proxy_set_header {header} $http_{var};");
    }
    out.push_str(
        r#"    # When the gateway received the request (common::http::REQUEST_START). nginx builds the
    # upstream request once, so a retry on another replica carries the first attempt's time, and
    # a checkout moved off a dead replica keeps its first deadline (CHECKOUT_TIMEOUT_MS + 1 s).
    proxy_set_header X-Request-Start "t=${msec}";
    # Retries (issue 13: no 5xx when a replica dies). A failed connect, or a connection that
    # fails before any answer, moves on to the next replica. nginx never retries a POST it has
    # sent (the service may have applied it) unless `non_idempotent` says so, which only two
    # kinds of request get: a checkout (idempotent by itself: a repeat joins the same saga or
    # finds the order paid; location /orders/checkout/) and a POST carrying an Idempotency-Key
    # (a repeat is answered from the first, common::idempotency), which the locations send to
    # @retryable with the reads, as nginx cannot vary proxy_next_upstream by header.
    # A replica that accepts a request and then says nothing (a frozen process) is left after a
    # read timeout: the checkout's, the retryable requests' (@retryable), or nginx's long one for
    # an unkeyed POST, which cannot be retried.
    proxy_next_upstream error timeout;
    # Reads and keyed requests: safe to send again to another replica. (A read with a chunked
    # body stays where it is: nginx finds such a body too large only while reading it, and the
    # jump to @retryable would lose the JSON 413 for it.)
    map "$request_method:$http_transfer_encoding:$http_idempotency_key" $retryable {
        "~^(GET|HEAD)::" 1;
        "~^[^:]*:[^:]*:." 1;
        default "";
    }
"#,
    );
    let mut keyed_map = String::from("    map $uri $keyed_upstream {\n");
    let mut locations = Vec::new();
    let console_pass;
    match upstreams {
        Upstreams::Loopback(ports_by_prefix, logparser) => {
            let _ = writeln!(
                out,
                "    upstream console {{\n        server 127.0.0.1:{logparser} max_fails=0;\n        keepalive 16;\n    }}"
            );
            console_pass = "proxy_pass http://console;".to_string();
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
                let _ = writeln!(keyed_map, "        ~^/{prefix}/ {prefix};");
            }
        }
        Upstreams::Dns { resolver, hosts } => {
            // A variable in proxy_pass makes nginx resolve the name per request (cached for
            // `valid`), and use every address it gets in turn: a refused or timed-out connect
            // moves on to the next replica (the request was not sent, so even a POST is safe).
            console_pass = format!(
                "set $upstream_console logparser:{}; proxy_pass http://$upstream_console;",
                defaults::LOGPARSER_PORT
            );
            let _ = writeln!(out, "    resolver {resolver} valid=1s ipv6=off;");
            out.push_str("    resolver_timeout 2s;\n    proxy_connect_timeout 2s;\n");
            for (prefix, host) in hosts {
                locations.push((
                    *prefix,
                    format!("set $upstream_{prefix} {host}; proxy_pass http://$upstream_{prefix};"),
                ));
                let _ = writeln!(keyed_map, "        ~^/{prefix}/ {host};");
            }
        }
    }
    // The upstream of a keyed request, by its path: a name of an `upstream` block (native) or a
    // host resolved per request (containers), as in the prefix's own location.
    out.push_str(&keyed_map);
    out.push_str("    }\n");
    let _ = writeln!(out, "    server {{\n        listen {listen};");
    out.push_str(
        r#"        # Bytes nginx lets through in a request target but the services' HTTP parser refuses
        # with an empty 400 (`<`, `>` or a backquote in the path; `<`, `>` or a double quote in the
        # query; bytes that are not UTF-8): refused here, with JSON.
        if ($request_uri ~ "^[^?#]*[<>`]|^[^?#]*\?[^#]*[<>\"]") {
            rewrite ^ /__bad_target last;
        }
        if ($request_uri !~ "^(?:[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2})*+$") {
            rewrite ^ /__bad_target last;
        }
        # An Idempotency-Key with bytes other than printable ASCII, which the services refuse
        # (some of them, DEL or a tab, their HTTP parser with an empty 400): refused here, with JSON.
        if ($http_idempotency_key ~ "[^\x20-\x7e]") {
            rewrite ^ /__bad_idempotency_key last;
        }
"#,
    );
    for (prefix, pass) in &locations {
        let _ = writeln!(
            out,
            "        location /{prefix}/ {{ if ($retryable) {{ return 418; }} {pass} }}"
        );
        if *prefix == "orders" {
            // A checkout is retried on another replica when the first fails before answering
            // (its process died: `error`), cannot be reached, answers 502/503, or says nothing
            // until the order service's own bound is past (a frozen process: `timeout`); the
            // retry joins the same saga, and the order service answers by the first attempt's
            // deadline (or, past it, within its late budget).
            let _ = writeln!(
                out,
                "        location /orders/checkout/ {{ proxy_read_timeout {checkout_read}ms; proxy_next_upstream error timeout http_502 http_503 non_idempotent; {pass} }}"
            );
        }
        // Without this nginx answers `/stock` with an HTML redirect to `/stock/`.
        let _ = writeln!(
            out,
            "        location = /{prefix} {{ default_type application/json; return 404 '{{\"error\": \"no route for /{prefix}\"}}'; }}"
        );
    }
    out.push_str(
        &r#"        # A read, or a request with an Idempotency-Key (sent here by `return 418` in its
        # prefix's location; error_page keeps the URI as received): a repeat on another replica
        # changes nothing (a keyed one is answered from the first attempt's record), so it is
        # retried even once sent, and after a short silence. The path decides the upstream
        # ($keyed_upstream). Its own errors (all replicas down, a chunked body found too large)
        # still get the JSON pages: this is a second error page.
        error_page 418 = @retryable;
        location @retryable {
            recursive_error_pages on;
            proxy_read_timeout RETRYABLE_READms;
            proxy_next_upstream error timeout non_idempotent;
            proxy_pass http://$keyed_upstream;
        }
        # The operator console (logparser::console), served by the log parser. Unlike the
        # services it reads the client's headers: Host and Origin (the same-origin check of its
        # actions), Cookie and Authorization (the operator token); so they go upstream here,
        # with the client's address for its action log. A standby log parser refuses an action
        # with 503 before doing anything, so that answer (and a failed connect) moves the request
        # on to the next instance (containers: `--scale logparser=2`).
        location /console/ {
            proxy_pass_request_headers on;
            proxy_next_upstream error http_503 non_idempotent;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 120s;
            CONSOLE_PASS
        }
        location = /console { return 301 /console/; }
        # nginx itself, not the services behind it: for health checks of the gateway.
        location = /gateway/health {
            default_type application/json;
            return 200 '{"status": "ok"}';
        }
        location / {
            default_type application/json;
            return 404 '{"error": "no route: the gateway serves /orders/, /stock/, /payment/, /ids/ and /console/"}';
        }
"#
        .replace("RETRYABLE_READ", &retryable_read.to_string())
        .replace("CONSOLE_PASS", &console_pass),
    );
    for refusal in own_refusals() {
        let Refusal {
            codes,
            status,
            name,
            why,
            message,
        } = refusal;
        let _ = writeln!(out, "        # {why}");
        if !codes.is_empty() {
            // `=status`: the answer's status, where nginx's own code is not the one to answer.
            let overwrite = if codes.split(' ').all(|c| c == status.to_string()) {
                String::new()
            } else {
                format!("={status} ")
            };
            let _ = writeln!(out, "        error_page {codes} {overwrite}/__{name};");
        }
        // `client_max_body_size 0`: an error page is a location of its own, where the body limit
        // would apply again; a second error in an error page gets nginx's HTML page (a request
        // refused with 501 for its Transfer-Encoding that also announced a large body did).
        let _ = write!(
            out,
            r#"        location = /__{name} {{
            internal;
            client_max_body_size 0;
            default_type application/json;
            return {status} '{{"error": "{message}"}}';
        }}
"#
        );
    }
    out.push_str(
        r#"        error_page 502 503 504 = @unavailable;
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

/// One refusal nginx makes itself, answered with JSON from an internal location.
struct Refusal {
    /// The codes nginx raises for it (`error_page`); none when a `rewrite` leads there.
    codes: &'static str,
    /// The status answered: a 4xx, also for what nginx itself answers with a 5xx.
    status: u16,
    /// The internal location: `/__<name>`.
    name: &'static str,
    /// A comment saying when it happens.
    why: &'static str,
    /// The `error` of the JSON body (no quotes or backslashes).
    message: String,
}

/// Every refusal of nginx's own. Hostile input must get a JSON 4xx, never nginx's HTML page nor a
/// 5xx (a 5xx means the system failed): nginx answers an unknown transfer coding with 501 and
/// an HTTP version it does not speak with 505, which become 400s here.
fn own_refusals() -> Vec<Refusal> {
    let max_body = common::http::MAX_BODY_BYTES;
    vec![
        Refusal {
            codes: "400",
            status: 400,
            name: "bad_request",
            why: "Requests nginx cannot parse (a NUL byte in the path, a bad chunk, ...).",
            message: "bad request: the gateway cannot parse this request".into(),
        },
        Refusal {
            codes: "",
            status: 400,
            name: "bad_target",
            why: "Request targets the `if`s above refuse.",
            message: "bad request: percent-encode <, >, backquotes, double quotes and \
                      non-UTF-8 bytes in the URL"
                .into(),
        },
        Refusal {
            codes: "",
            status: 400,
            name: "bad_idempotency_key",
            why: "An Idempotency-Key the `if` above refuses.",
            message: "bad Idempotency-Key: send 1 to 128 printable ASCII characters (space to ~)"
                .into(),
        },
        Refusal {
            codes: "494",
            status: 400,
            name: "headers_too_large",
            why: "Request headers over large_client_header_buffers (nginx's own code 494).",
            message: "request headers too large: at most 8 KB a line and 32 KB in all".into(),
        },
        Refusal {
            codes: "405",
            status: 405,
            name: "method_not_allowed",
            why: "TRACE and CONNECT, which nginx refuses itself.",
            message: "method not allowed by the gateway".into(),
        },
        Refusal {
            codes: "413",
            status: 413,
            name: "too_large",
            why: "A body over client_max_body_size.",
            message: format!(
                "request body too large: no endpoint takes a body, and one of at most \
                 {max_body} bytes is ignored"
            ),
        },
        Refusal {
            codes: "414",
            status: 414,
            name: "too_long",
            why: "A request line over large_client_header_buffers.",
            message: "the path is too long".into(),
        },
        Refusal {
            codes: "501",
            status: 400,
            name: "bad_transfer_encoding",
            why: "A Transfer-Encoding other than chunked (nginx: 501).",
            message: "unsupported Transfer-Encoding: only chunked is understood".into(),
        },
        Refusal {
            codes: "505",
            status: 400,
            name: "bad_version",
            why: "HTTP/2.0 or a made-up version on this HTTP/1.1 port (nginx: 505).",
            message: "unsupported HTTP version: use HTTP/1.1".into(),
        },
    ]
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
        assert!(conf.contains(
            "set $upstream_console logparser:8105; proxy_pass http://$upstream_console;"
        ));
    }

    /// Issue 13: hostile input stops at the gateway, in both deployments, with a JSON 4xx.
    #[test]
    fn both_gateways_bound_bodies_and_headers_and_answer_json() {
        let s = StackSettings {
            data_dir: "/tmp/x".into(),
            port_offset: 0,
            gateway_port: 8000,
            replicas: 1,
            shards: 0,
        };
        for conf in [
            config(&s, false, Duration::from_secs(10)),
            container_config(),
        ] {
            let limit = common::http::MAX_BODY_BYTES;
            assert!(conf.contains(&format!("client_max_body_size {limit};")));
            assert!(conf.contains("proxy_pass_request_headers off;"));
            assert!(conf.contains("proxy_set_header Idempotency-Key $http_idempotency_key;"));
            // A sent POST is retried only when a repeat is safe: a checkout, or a keyed request.
            assert!(conf.contains("proxy_next_upstream error timeout;"));
            // (and a console action a standby log parser refused with 503: nothing was done)
            assert_eq!(conf.matches("non_idempotent;").count(), 3, "{conf}");
            // A frozen replica is left after the order service's own bound (10 s + 1 s + 0.5 s).
            assert!(conf.contains("location /orders/checkout/ { proxy_read_timeout 11500ms; proxy_next_upstream error timeout http_502 http_503 non_idempotent;"));
            assert!(conf.contains("if ($retryable) { return 418; }"));
            assert!(conf.contains("error_page 418 = @retryable;"));
            assert!(conf.contains("proxy_read_timeout 3000ms;\n            proxy_next_upstream error timeout non_idempotent;"));
            assert!(
                conf.contains("\"~^(GET|HEAD)::\" 1;") && conf.contains("\"~^[^:]*:[^:]*:.\" 1;")
            );
            assert!(conf.contains("proxy_set_header X-Request-Start \"t=${msec}\";"));
            for r in own_refusals() {
                assert!(r.status < 500, "{}", r.name);
                assert!(!r.message.contains(['"', '\\', '\'']), "{}", r.message);
                if !r.codes.is_empty() {
                    assert!(
                        conf.contains(&format!("error_page {} ", r.codes)),
                        "{}",
                        r.name
                    );
                }
                assert!(conf.contains(&format!(
                    "location = /__{} {{\n            internal;\n            client_max_body_size 0;",
                    r.name
                )));
            }
            for code in ["400", "405", "413", "414", "494", "501", "505"] {
                assert!(
                    own_refusals()
                        .iter()
                        .any(|r| r.codes.split(' ').any(|c| c == code)),
                    "nginx's {code} has no JSON page"
                );
            }
        }
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
        let conf = config(&s, false, Duration::from_secs(10));
        assert!(conf.contains("server 127.0.0.1:8101 max_fails=0;"));
        assert!(conf.contains("server 127.0.0.1:8111 max_fails=0;"));
        assert!(conf.contains("listen 127.0.0.1:8000;"));
        assert!(conf.contains(
            "location /orders/ { if ($retryable) { return 418; } proxy_pass http://orders; }"
        ));
        // The checkout's read timeout follows CHECKOUT_TIMEOUT_MS.
        let conf = config(&s, false, Duration::from_millis(3000));
        assert!(conf.contains("location /orders/checkout/ { proxy_read_timeout 4500ms;"));
        assert!(conf.contains("~^/stock/ stock;"));
        assert!(!conf.contains("resolver"));
        // The console goes to the log parser, with the headers it reads.
        assert!(conf.contains("upstream console {\n        server 127.0.0.1:8105 max_fails=0;"));
        assert!(conf.contains("location /console/ {\n            proxy_pass_request_headers on;"));
        assert!(conf.contains("proxy_set_header Host $http_host;"));
        assert!(conf.contains("proxy_pass http://console;"));
        let offset = StackSettings {
            port_offset: 11000,
            ..s
        };
        assert!(config(&offset, false, Duration::from_secs(10))
            .contains("server 127.0.0.1:19105 max_fails=0;"));
    }
}
