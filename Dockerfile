# One image with every Connect binary: link-registry, token-broker, dev-issuer, connect-dev.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p link-registry -p token-broker -p dev-issuer -p connect-dev

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 connect \
    && mkdir -p /shared /data \
    && chown connect /shared /data
COPY --from=build /src/target/release/link-registry /src/target/release/token-broker \
     /src/target/release/dev-issuer /src/target/release/connect-dev /usr/local/bin/
USER connect
WORKDIR /data
CMD ["link-registry", "--help"]
