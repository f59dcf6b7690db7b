# One image with both halves of Lake: redis-server with liblake.so, and
# lake-sidecar. docker-compose.yml runs it twice (redis, sidecar) sharing the
# socket through a volume.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lake-module -p lake-sidecar

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/liblake.so /usr/lib/redis/modules/liblake.so
COPY --from=build /src/target/release/lake-sidecar /usr/local/bin/lake-sidecar
EXPOSE 6379 9740
CMD ["lake-sidecar", "--help"]
