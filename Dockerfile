# The shoplog runtime image: ids, order, stock, payment, logparser and the `shoplog` CLI in one
# image; each container picks its program as its command (see docker-compose.yml).
#
# The binaries are built on the host, not in the image (`make images` runs `cargo build --release`
# and copies them, stripped, to target/docker/bin): this project's machines reach no Rust
# registry from inside a container. The base image is the public debian:bookworm-slim, or one
# made from Debian's packages by deploy/docker/base-image.sh where no registry answers; the host
# build is Debian bookworm too, so the binaries find the same glibc.
FROM debian:bookworm-slim

# Fixed ids, so that Kubernetes' runAsUser/fsGroup (deploy/k8s) can name them.
RUN groupadd --system --gid 10001 shoplog \
 && useradd --system --uid 10001 --gid shoplog --home-dir /var/lib/shoplog --create-home \
      --shell /usr/sbin/nologin shoplog
COPY deploy/docker/http-ok /usr/local/bin/http-ok
COPY target/docker/bin/ /usr/local/bin/

# Listen on every interface of the container; every other address comes from the environment
# (docker-compose.yml, deploy/k8s/configmap.yaml).
ENV BIND=0.0.0.0
USER shoplog
WORKDIR /var/lib/shoplog
# The programs stop gracefully on SIGTERM (Docker's default stop signal): in-flight requests are
# answered, consumers stop between batches.
STOPSIGNAL SIGTERM
CMD ["shoplog", "--help"]
