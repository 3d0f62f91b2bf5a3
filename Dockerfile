# One image for every role: ROLES=api | worker | scheduler (or any mix).
# Build:  docker build -t switchyard .
# Run:    docker run -e DATABASE_URL=postgresql://... -e API_TOKENS=... -p 8080:8080 switchyard

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/switchyard
COPY pyproject.toml README.md ./
COPY config ./config
COPY server ./server
COPY piccolo_migrations ./piccolo_migrations
# With the `otel` extra: tracing turns on by OTEL_EXPORTER_OTLP_ENDPOINT alone (README: Tracing).
RUN /opt/switchyard/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/switchyard/bin/pip install --no-cache-dir ".[otel]"

FROM python:3.11-slim-bookworm
# pgserver (the embedded PostgreSQL, used only when no database is configured) needs no extra
# packages as a non-root user; tzdata comes from PyPI for zoneinfo.
# A numeric USER (uid and gid 10001, as deploy/ sets runAsUser and runAsGroup) lets Kubernetes
# verify runAsNonRoot without reading /etc/passwd; tests/unit/test_deploy_manifests.py checks both.
RUN groupadd --gid 10001 switchyard \
 && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin switchyard \
 && mkdir /data && chown 10001:10001 /data
COPY --from=build /opt/switchyard /opt/switchyard
ENV PATH=/opt/switchyard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ROLES=api,worker,scheduler \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/data \
    LOG_FORMAT=json
USER 10001:10001
WORKDIR /data
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8080')}/health\", timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard"]
CMD ["run"]
