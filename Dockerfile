# sluice: one image with both binaries; docker-compose.yml runs the collector and the relay
# side by side from it. Build: docker build -t sluice .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice -p sluice-relay --bins \
 && install -D target/release/sluice target/release/sluice-relay -t /out

FROM debian:bookworm-slim
# CA roots for AWS endpoints (the collector's HTTPS); the relay trusts only the configured
# chain for Devo, never the system roots.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/sluice-relay sluice \
 && install -d -o sluice -g sluice /var/lib/sluice-relay /var/lib/sluice /run/sluice
COPY --from=build /out/sluice /out/sluice-relay /usr/local/bin/
COPY config/ /etc/sluice/
USER sluice
# The relay's spool and the collector's optional ledger must outlive the container.
VOLUME ["/var/lib/sluice-relay", "/var/lib/sluice"]
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["--config", "/etc/sluice/collector.toml"]
