//! The gateway's nginx configuration: one upstream per service (all its replicas, keep-alive
//! connections), one `location` per prefix, JSON 404 for everything else. Everything nginx writes
//! goes under the data directory, so the gateway needs no system paths and no root.

use std::fmt::Write;

use crate::layout::StackSettings;

/// Renders `nginx.conf` for the stack.
pub fn config(s: &StackSettings, run_as_root: bool) -> String {
    let dir = s.component_dir("gateway");
    let dir = dir.display();
    let log = s.log_file("gateway");
    let mut out = String::new();
    if run_as_root {
        out.push_str("user root;\n");
    }
    let _ = write!(
        out,
        r#"worker_processes auto;
daemon off;
pid {dir}/nginx.pid;
error_log {log} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_read_timeout 60s;
    keepalive_requests 100000;
"#,
        log = log.display()
    );
    for (prefix, ports) in s.upstreams() {
        let _ = writeln!(out, "    upstream {prefix} {{");
        for p in ports {
            // max_fails=0: never quarantine a replica. A dead one costs a refused connect on
            // loopback before nginx tries the next; quarantine would instead turn a replica that
            // is just starting (or restarting) into seconds of 503s, per nginx worker.
            let _ = writeln!(out, "        server 127.0.0.1:{p} max_fails=0;");
        }
        out.push_str("        keepalive 256;\n    }\n");
    }
    let _ = writeln!(
        out,
        "    server {{\n        listen 127.0.0.1:{};",
        s.gateway_port
    );
    for (prefix, _) in s.upstreams() {
        let _ = writeln!(
            out,
            "        location /{prefix}/ {{ proxy_pass http://{prefix}; }}"
        );
        // Without this nginx answers `/stock` with an HTML redirect to `/stock/`.
        let _ = writeln!(
            out,
            "        location = /{prefix} {{ default_type application/json; return 404 '{{\"error\": \"no route for /{prefix}\"}}'; }}"
        );
    }
    out.push_str(
        r#"        location / {
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
