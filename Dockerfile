# The service image: slim, non-root, no build tools in the final stage.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models models
COPY consumer consumer
COPY producer producer
COPY booking_sessions booking_sessions
COPY migrations migrations
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app booking
WORKDIR /app
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER booking
EXPOSE 9108
ENTRYPOINT ["booking-sessions"]
CMD ["run"]
