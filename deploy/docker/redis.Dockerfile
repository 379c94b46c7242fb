# Redis for shoplog's databases and lock nodes, from Debian's redis-server package on the same base
# as every shoplog image. Runs as the package's `redis` user; data (the AOF) in /data.
#
# Arguments after the image name are added to the fixed ones. The default command is the lock
# nodes' AOF setting (`--appendfsync everysec`); docker-compose.yml gives the service databases
# `--appendfsync always` (docs/FAULTS.md, "Durability").
#
# The cluster option (docker-compose.cluster.yml) runs the same image with another entrypoint:
# cluster-node (a Redis Cluster node) or cluster-keeper (forms and watches one cluster).
FROM debian:bookworm-slim

# The `redis` user made first with fixed ids (the package keeps an existing one), so that
# Kubernetes' fsGroup (deploy/k8s) can give it the volume.
RUN groupadd --system --gid 10002 redis \
 && useradd --system --uid 10002 --gid redis --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
 && install -d -o redis -g redis -m 0750 /data

COPY cluster-node cluster-keeper /usr/local/bin/

USER redis
WORKDIR /data
EXPOSE 6379
HEALTHCHECK --interval=2s --timeout=2s --retries=30 CMD redis-cli ping | grep -q PONG
ENTRYPOINT ["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", \
            "--dir", "/data", "--daemonize", "no"]
CMD ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
