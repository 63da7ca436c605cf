# sluice: one runtime image with both binaries (`sluice`, the collector, is the entrypoint;
# run the relay with `--entrypoint /usr/local/bin/sluice-relay`). The runtime is distroless in
# kind: FROM scratch plus the C libraries the binaries link, CA roots and a passwd entry; no
# shell, no package manager; it runs as uid 10001. docker-compose.yml runs the pair from it.
#
# Needs BuildKit (DOCKER_BUILDKIT=1 on Docker 20.10; the default since 23.0), which builds only
# the stages the chosen binaries need.
#
#   docker build -t sluice .
#       builds the binaries from source in BUILDER_IMAGE (Rust on Debian bookworm) and the
#       runtime on BASE_IMAGE's libraries.
#   docker build -t sluice:local --build-arg BINARIES=prebuilt \
#       --build-arg BASE_IMAGE=sluice-debian:bookworm .
#       copies binaries built on the host from target/docker/ instead, on a locally made base:
#       what scripts/images.sh does where no image can be pulled (the tests). The host must be
#       Debian bookworm (or have the same glibc) for prebuilt binaries to run.
#
# The health check needs no curl: `sluice health --config F` and `sluice-relay health --config F`
# (see docker-compose.yml).

ARG BUILDER_IMAGE=rust:1-bookworm
ARG BASE_IMAGE=debian:bookworm-slim
ARG BINARIES=source

FROM ${BUILDER_IMAGE} AS source
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice -p sluice-relay --bins \
 && install -D -s -t /out target/release/sluice target/release/sluice-relay

FROM scratch AS prebuilt
COPY target/docker/sluice target/docker/sluice-relay /out/

FROM ${BINARIES} AS binaries

# Gathers the runtime's files under /rootfs: the shared libraries the binaries need, found with
# ldd so the list follows the binaries; CA roots (for AWS; the relay trusts only its configured
# chain for Devo); passwd and group entries; the data directories owned by the runtime user.
FROM ${BASE_IMAGE} AS rootfs
RUN [ -s /etc/ssl/certs/ca-certificates.crt ] || { apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*; }
COPY --from=binaries /out/ /rootfs/usr/local/bin/
RUN set -eu; \
    libs=$(ldd /rootfs/usr/local/bin/* | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u); \
    for lib in $libs; do cp -L --parents "$lib" /rootfs/; done; \
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nsluice:x:10001:10001:sluice:/var/lib/sluice:/sbin/nologin\n' > /rootfs/etc/passwd; \
    printf 'root:x:0:\nsluice:x:10001:\n' > /rootfs/etc/group; \
    printf 'hosts: files dns\n' > /rootfs/etc/nsswitch.conf; \
    install -d -m 0750 -o 10001 -g 10001 /rootfs/var/lib/sluice /rootfs/var/lib/sluice-relay /rootfs/run/sluice; \
    install -d -m 1777 /rootfs/tmp

FROM scratch AS runtime
COPY --from=rootfs /rootfs/ /
COPY config/ /etc/sluice/
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 10001:10001
# The relay's spool and the collector's optional ledger must outlive the container; /run/sluice
# holds the channel's unix socket when the pair shares it through a volume.
VOLUME ["/var/lib/sluice-relay", "/var/lib/sluice", "/run/sluice"]
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["--config", "/etc/sluice/collector.toml"]
