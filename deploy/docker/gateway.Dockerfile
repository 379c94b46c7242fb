# The gateway: nginx from Debian's nginx-light package, routing /orders/ /stock/ /payment/ /ids/
# to the services by their compose names (re-resolved every second through Docker's DNS, so
# replicas that come, go or restart with a new address are found). nginx.conf is rendered by the
# shoplog CLI's gateway module (cli/src/nginx.rs), the same code that writes the native stack's.
FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /etc/nginx/sites-enabled/* \
 && install -d -o www-data -g www-data -m 0750 /var/cache/shoplog-gateway

COPY nginx.conf /etc/shoplog/nginx.conf
COPY http-ok /usr/local/bin/http-ok

USER www-data
EXPOSE 8000
HEALTHCHECK --interval=2s --timeout=2s --retries=30 CMD http-ok 8000 /gateway/health
# SIGQUIT: finish the requests in flight, then stop.
STOPSIGNAL SIGQUIT
CMD ["nginx", "-e", "/dev/stderr", "-c", "/etc/shoplog/nginx.conf"]
