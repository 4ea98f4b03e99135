# syntax=docker/dockerfile:1
# The tollgate binary in a small Debian image (see docs/deploy.md).
#
#   docker build -t tollgate .
#   docker run -p 8080:8080 -e TOLLGATE__AUTH__JWT_SECRET=... -v tollgate-data:/var/lib/tollgate tollgate

# --- build: the release binary, with the lockfile's exact dependencies ---
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p app \
 && strip target/release/tollgate

# --- run: the binary, CA certificates (Stripe, LLM providers, JWKS over HTTPS), the config ---
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tollgate --create-home tollgate
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY config /etc/tollgate
# The layered configuration: /etc/tollgate/default.toml, then production.toml, then any file
# in TOLLGATE_CONFIG (your catalog), then TOLLGATE__SECTION__KEY variables (your secrets).
ENV TOLLGATE_CONFIG_DIR=/etc/tollgate \
    TOLLGATE_ENV=production
USER tollgate
# SQLite's default file (data/tollgate.db) lands here; mount a volume to keep it.
WORKDIR /var/lib/tollgate
VOLUME /var/lib/tollgate
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve"]
