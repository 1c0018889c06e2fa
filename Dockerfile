# syntax=docker/dockerfile:1
# Builds the four binaries once; docker-compose.yml runs each as a service.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binaries are
# copied out in the same step because the target cache is not in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --bins \
 && mkdir -p /out \
 && cp target/release/sessions-ingest target/release/sessions-query \
       target/release/sessions-admin target/release/sessions-producer /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --uid 10001 sessions
COPY --from=build /out/ /usr/local/bin/
WORKDIR /app
COPY schemas/ /app/schemas/
USER sessions
ENV RUST_LOG=info
# Each compose service picks its program (sessions-ingest, sessions-query, ...).
CMD ["sessions-query", "--help"]
