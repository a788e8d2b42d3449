# Multi-stage build: compile with the Rust toolchain, run as a non-root user on a slim base.
#   docker build -t secret-broker .
#   docker run -p 8080:8080 -v broker-data:/data -e AWS_REGION secret-broker
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY migrations migrations
COPY src src
COPY benches benches
# Exactly what `cargo build --release --locked` produces is what the runtime image runs.
RUN cargo build --release --locked \
 && install -m 0755 target/release/secret-broker /usr/local/bin/secret-broker

FROM debian:bookworm-slim
# ca-certificates follows Debian's security updates (webhooks over TLS need it), so it is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --create-home broker
COPY --from=build /usr/local/bin/secret-broker /usr/local/bin/secret-broker
USER 10001:10001
WORKDIR /data
ENV BROKER_LISTEN=0.0.0.0:8080 \
    BROKER_DATABASE=/data/secret-broker.db \
    BROKER_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/secret-broker", "health"]
ENTRYPOINT ["/usr/local/bin/secret-broker"]
CMD ["serve"]
