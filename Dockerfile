# syntax=docker/dockerfile:1
# Multi-stage build: a full Rust toolchain to build, a slim Debian to run.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY strategies/Cargo.toml strategies/Cargo.toml
RUN mkdir -p src strategies/src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs strategies/src/lib.rs \
    && cargo fetch --locked
COPY . .
# A generic x86-64 target on purpose: `-C target-cpu=native` can make sha2's
# SHA-NI path dramatically slower on some hosts (see README, Performance).
RUN cargo build --release --locked --bin mmd \
    && install -m 0755 target/release/mmd /usr/local/bin/mmd

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 mmd \
    && useradd --system --uid 10001 --gid mmd --home-dir /var/lib/mmd --shell /usr/sbin/nologin mmd \
    && install -d -o mmd -g mmd -m 0700 /var/lib/mmd \
    && install -d -m 0755 /etc/mmd
COPY --from=build /usr/local/bin/mmd /usr/local/bin/mmd
# The demo config (embedded simulator) is the default; mount your own at /etc/mmd.
COPY config/ /etc/mmd/
USER mmd:mmd
WORKDIR /var/lib/mmd
ENV MMD__STORAGE__PATH=/var/lib/mmd/mmd.sqlite \
    MMD__METRICS__LISTEN=0.0.0.0:9898 \
    MMD__MARKETS__DIR=/etc/mmd/markets \
    MMD__LOG__FORMAT=json
VOLUME ["/var/lib/mmd"]
EXPOSE 9898
STOPSIGNAL SIGTERM
# The daemon handles SIGTERM itself (cancels its orders, exits within 10 s);
# tini only reaps and forwards, so a second signal still exits at once.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/mmd"]
CMD ["run", "--config", "/etc/mmd/demo.toml"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/mmd", "health", "--url", "http://127.0.0.1:9898/health"]
