# syntax=docker/dockerfile:1
# The service image: slim, non-root, no build tools in the final stage (every dependency ships a wheel).
ARG PYTHON=python:3.11-slim

FROM ${PYTHON} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models models
COPY consumer consumer
COPY producer producer
COPY booking_sessions booking_sessions
COPY migrations migrations
COPY bench bench
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON}
# In a container the probes and Prometheus come from outside it: all addresses (the process alone binds 127.0.0.1).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BOOKING_METRICS_PORT=9108 \
    BOOKING_METRICS_HOST=0.0.0.0
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home booking
WORKDIR /app
# A bind mount, not a COPY: the wheels never become a layer of the final image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels booking-sessions
# Numeric, so an orchestrator can check "runAsNonRoot" without reading /etc/passwd.
USER 10001:10001
EXPOSE 9108
# No curl in a slim image: the standard library asks /healthz (liveness; /readyz is for readiness probes).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BOOKING_METRICS_PORT', '9108'), timeout=3)"]
ENTRYPOINT ["booking-sessions"]
CMD ["run"]
