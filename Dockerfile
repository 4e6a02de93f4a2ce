# syntax=docker/dockerfile:1
# The service image: slim, non-root, no build tools in the final stage (every dependency ships a wheel).
# The base is pinned by digest (the multi-platform index of python:3.11-slim, Debian 13): every build starts from
# the same bytes, whatever the tag points at later. The tag stays for readers; the digest decides. To bump it (each
# month, and for every Python or Debian security release): `docker buildx imagetools inspect python:3.11-slim`,
# copy its "Digest:" line here, build, run the tests (README, "Security").
ARG PYTHON=python:3.11-slim@sha256:e88e9763f943ec1834f992a4b51e0f24500486803e8bc534e5767af9ea65f6ce

FROM ${PYTHON} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models models
COPY consumer consumer
COPY producer producer
COPY booking_sessions booking_sessions
COPY migrations migrations
# The project alone: its dependencies come from requirements.lock in the final stage.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON}
# BOOKING_EMBEDDED_SERVERS=forbid: `run` fails closed without both servers; throwaway ones are for development.
# In a container the probes and Prometheus come from outside it: all addresses (the process alone binds 127.0.0.1).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BOOKING_METRICS_PORT=9108 \
    BOOKING_METRICS_HOST=0.0.0.0 \
    BOOKING_EMBEDDED_SERVERS=forbid
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home booking
WORKDIR /app
# Every dependency exactly as locked, each file checked against its hash; then the service's own wheel, adding
# nothing. Bind mounts, not COPY: neither the lock nor the wheel becomes a layer of the final image.
RUN --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && python -m pip install --no-cache-dir --no-deps --no-index /wheels/booking_sessions-*.whl
# Numeric, so an orchestrator can check "runAsNonRoot" without reading /etc/passwd.
USER 10001:10001
EXPOSE 9108
# No curl in a slim image: the standard library asks /healthz (liveness; /readyz is for readiness probes).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BOOKING_METRICS_PORT', '9108'), timeout=3)"]
ENTRYPOINT ["booking-sessions"]
CMD ["run"]
