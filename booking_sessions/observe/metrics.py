"""Prometheus metrics on a registry of the service's own, and the facade the loop, relay and retention call.

The gauges that cost a round trip are refreshed by ``booking_sessions.observe.sampler``; errors become labels
through ``booking_sessions.observe.causes``.

Names follow Prometheus conventions: ``booking_sessions_`` prefix, ``_total`` counters, seconds, and labels of
low cardinality only (a reason, a cause, a stage, a partition: never a booking or message id).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from booking_sessions.observe.causes import RETRY_CAUSES, describe, retry_cause
from consumer.parking import Hold
from consumer.results import BatchResult
from models.errors import DlqReason
from models.events import SessionEventType
from models.records import SentAs

NAMESPACE = "booking_sessions"
# A batch takes 1 to max_batch_records (default 2000) records, up to catch_up_batch_records (8000) while behind.
BATCH_RECORDS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 8000, 20000)
# From a fraction of a millisecond (decode of one record) to the minutes of a retried outage.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


# The ``component`` label values of the retries counter.
RETRYING_COMPONENTS = ("consumer", "relay", "retention", "lag_sampler", "outbox_sampler", "startup")


class Metrics:
    """Every metric of the service on ``registry`` (a new one of its own when None); the consumer loop, the relay
    and retention report through its methods (``LoopObserver``, ``RelayObserver``, ``RetentionObserver``), and it
    keeps what ``observe.health`` judges."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No "_created" twin of every counter: noise in the text format Prometheus scrapes (process-wide switch).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        # Our own registry: several services (tests, the demo) in one process never share or clash.
        self.registry = registry or CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self.consumed = Counter(f"{NAMESPACE}_events_consumed", "Input records in committed batches", registry=r)
        self.applied = Counter(f"{NAMESPACE}_events_applied", "Input events applied to the sessions", registry=r)
        self.duplicates = Counter(
            f"{NAMESPACE}_events_duplicate", "Input events whose message id was already processed", registry=r
        )
        self.ignored = Counter(f"{NAMESPACE}_events_ignored", "Input events of an unknown type", registry=r)
        self.dead_lettered = Counter(
            f"{NAMESPACE}_events_dead_lettered", "Input records sent to the DLQ", ["reason"], registry=r
        )
        self.dead_letters_refused = Counter(
            f"{NAMESPACE}_dead_letters_refused",
            "Dead letters the DLQ topic refused for good, by what was sent instead (value_omitted, bare, lost)",
            ["sent_as"],
            registry=r,
        )
        self.session_events = Counter(
            f"{NAMESPACE}_session_events_written", "Outbox rows written, by event type", ["type"], registry=r
        )
        self.sessions_cancelled = Counter(
            f"{NAMESPACE}_sessions_cancelled",
            "Sessions that became CANCELLED; announced=false: cancelled before they were ever announced",
            ["announced"],
            registry=r,
        )
        self.batch_records = Histogram(
            f"{NAMESPACE}_batch_records", "Records per committed batch", buckets=BATCH_RECORDS_BUCKETS, registry=r
        )
        self.batch_duration = Histogram(
            f"{NAMESPACE}_batch_duration_seconds",
            "Time per committed batch and stage: decode, database (transaction and dead letters), offset commit, "
            "total (records in hand to offsets committed, retries included)",
            ["stage"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            f"{NAMESPACE}_retries", "Transient failures retried, by component and cause", ["component", "cause"],
            registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            f"{NAMESPACE}_consumer_lag_records",
            "Records not yet committed by the group: end offset minus committed offset, per assigned partition",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned = Gauge(f"{NAMESPACE}_assigned_partitions", "Input partitions owned by this instance", registry=r)
        self.input_partitions = Gauge(
            f"{NAMESPACE}_input_partitions",
            "Partitions of the input topic, as this instance's consumer last read its metadata",
            registry=r,
        )
        self.outbox_rows = Gauge(f"{NAMESPACE}_outbox_unpublished_rows", "Outbox rows not yet published", registry=r)
        self.outbox_age = Gauge(
            f"{NAMESPACE}_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none waits)",
            registry=r,
        )
        self.published = Counter(f"{NAMESPACE}_relay_published", "Outbox rows published by the relay", registry=r)
        self.publish_duration = Histogram(
            f"{NAMESPACE}_relay_publish_duration_seconds",
            "Time per relay step that published rows: read, send, broker acks, mark published, commit",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.retention_deleted_rows = Counter(
            f"{NAMESPACE}_retention_deleted_rows",
            "Rows deleted by the retention that run keeps (inbox older than BOOKING_INBOX_RETENTION, published "
            "outbox older than BOOKING_OUTBOX_RETENTION), by table",
            ["table"],
            registry=r,
        )
        self.stalled = Gauge(
            f"{NAMESPACE}_stalled",
            "1 while work waits for this component (lag; unpublished outbox rows) and it made no progress for "
            "BOOKING_STALL_AFTER_S; /healthz then fails",
            ["component"],
            registry=r,
        )
        self.meeting_key_superseded = Gauge(
            f"{NAMESPACE}_meeting_key_superseded",
            "1 while the database records a newer meeting key version than this instance's: it still makes new "
            "sessions' links under the older (perhaps leaked) key until restarted with the new secret",
            registry=r,
        )
        self.bookings_parked = Counter(
            f"{NAMESPACE}_bookings_parked",
            "Bookings set aside in a committed batch because another transaction holds their rows (a session row "
            "locked, a frozen consumer's inbox rows), with their later records until the rows are free (counted again "
            "in each batch that sets them aside)",
            registry=r,
        )
        self.held_partitions = Gauge(
            f"{NAMESPACE}_held_partitions",
            "Input partitions held at a parked booking's first record (their offset commit stops there)",
            registry=r,
        )
        # Every known label value present from the start: rate() and increase() need a zero to begin from.
        for table in ("inbox", "outbox"):
            self.retention_deleted_rows.labels(table)
        for stage in ("decode", "database", "commit", "total"):
            self.batch_duration.labels(stage)
        for kind in get_args(SessionEventType):
            self.session_events.labels(kind)
        for announced in ("true", "false"):
            self.sessions_cancelled.labels(announced)
        for reason in get_args(DlqReason):
            self.dead_lettered.labels(reason)
        for sent_as in get_args(SentAs):
            self.dead_letters_refused.labels(sent_as)
        for component in RETRYING_COMPONENTS:
            for cause in RETRY_CAUSES:
                self.retries.labels(component, cause)
        self.stalled.labels("consumer").set(0)
        self.stalled.labels("relay").set(0)
        # What booking_sessions.observe.health assesses (monotonic seconds; errors as ``describe`` gives them).
        self.relay_progress_at = self.consumer_progress_at = time.monotonic()
        self.relay_error: str | None = None
        self.consumer_error: str | None = None
        self.held: dict[str, Hold] = {}  # by "topic/partition"
        self.partition_lag: dict[str, int] = {}  # by "topic/partition", as last sampled
        self.lag_total: int | None = None
        self.outbox_waiting: int | None = None
        self.database_ok_at: float | None = None
        self.database_error: str | None = None
        self.kafka_ok_at: float | None = None
        self.kafka_error: str | None = None
        self._oldest_age_s: float | None = None
        self._oldest_sampled_at = 0.0
        self.outbox_age.set_function(self._outbox_age_now)

    # --- consumer loop (consumer.results.LoopObserver) -----------------------------------------------------------

    def batch_committed(self, result: BatchResult, *, commit_s: float) -> None:
        """A batch's offsets were committed: count its records by outcome, its dead letters by reason, its outbox
        rows by type, and time its stages (seconds: ``commit_s`` the offset commit, ``result.total_s`` the whole
        batch)."""
        self.consumer_progress_at, self.consumer_error = time.monotonic(), None
        self.consumed.inc(result.records)
        self.applied.inc(result.applied)
        self.duplicates.inc(result.duplicates)
        self.ignored.inc(result.ignored)
        for reason, count in result.dead_lettered.items():
            self.dead_lettered.labels(reason).inc(count)
        for sent_as, count in result.dlq_refused.items():
            self.dead_letters_refused.labels(sent_as).inc(count)
        self.session_events.labels("SessionCreated").inc(result.sessions_created)
        self.session_events.labels("SessionUpdated").inc(result.sessions_updated)
        self.session_events.labels("SessionCancelled").inc(result.sessions_cancelled)
        self.sessions_cancelled.labels("true").inc(result.sessions_cancelled)
        self.sessions_cancelled.labels("false").inc(result.cancelled_unannounced)
        self.batch_records.observe(result.records)
        for stage, seconds in (
            ("decode", result.decode_s),
            ("database", result.database_s),
            ("commit", commit_s),
            ("total", result.total_s),
        ):
            self.batch_duration.labels(stage).observe(seconds)

    def batch_retried(self, error: BaseException) -> None:
        """The loop retries a batch after ``error``: counted by cause, and kept (``describe``) for the health check."""
        self.retries.labels("consumer", retry_cause(error)).inc()
        self.consumer_error = describe(error)

    def holds_changed(self, parked: int, held: Mapping[str, Hold]) -> None:
        """A committed batch parked ``parked`` bookings, or released a partition; ``held`` is every hold now."""
        if held.keys() < self.held.keys():
            # A hold released is the consumer moving: the held partition's lag now waits for it again, and must
            # not count as a stall from the last commit before the release (which may be long ago, when the held
            # partition was all that waited).
            self.consumer_progress_at = time.monotonic()
        self.bookings_parked.inc(parked)
        self.held = dict(held)
        self.held_partitions.set(len(held))

    # --- outbox relay (producer.relay.RelayObserver) -------------------------------------------------------------

    def relay_stepped(self, published: int, duration_s: float) -> None:
        """A relay step ended without error (nothing waiting, another instance leading, or rows published)."""
        self.relay_progress_at, self.relay_error = time.monotonic(), None
        if published:
            self.published.inc(published)
            self.publish_duration.observe(duration_s)

    def relay_retried(self, error: BaseException) -> None:
        """The relay retries a step after ``error``: counted by cause, and kept for the health check."""
        self.retries.labels("relay", retry_cause(error)).inc()
        self.relay_error = describe(error)

    # --- retention (booking_sessions.retention.RetentionObserver) ---------------------------------------------

    def retention_deleted(self, table: str, rows: int) -> None:
        """Retention deleted ``rows`` rows of ``table`` (``inbox`` or ``outbox``)."""
        self.retention_deleted_rows.labels(table).inc(rows)

    def startup_retried(self, error: BaseException) -> None:
        """``run``'s start waits out ``error`` (a database away or not migrated yet: served meanwhile as "starting"):
        counted as a retry by cause, so that an instance that waits for ever pages (a newcomer's find: every
        counter read 0 during the wait, and nothing could fire)."""
        self.retries.labels("startup", retry_cause(error)).inc()

    def sample_failed(self, component: str, error: BaseException) -> None:
        """A gauge's sample failed (``lag_sampler``: the broker; ``outbox_sampler``: the database) and is taken again
        at the next interval: counted as a retry by cause, so that a server that stays silent pages
        (``BookingSessionsRetrying``) even while nothing waits; before, a broker frozen for hours left the lag gauge
        at its last value (0) and no alert could fire (a newcomer's find)."""
        self.retries.labels(component, retry_cause(error)).inc()

    def retention_retried(self, error: BaseException) -> None:
        """A retention round failed with ``error`` and will be tried again: counted by cause."""
        self.retries.labels("retention", retry_cause(error)).inc()

    # --- sampled gauges --------------------------------------------------------------------------------------

    def set_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Replace the lag series: partitions this instance no longer owns disappear (another one reports them)."""
        self.lag_total, self.kafka_ok_at = sum(lags.values()), time.monotonic()
        self.partition_lag = {f"{topic}/{partition}": lag for (topic, partition), lag in lags.items()}
        if not any(lag for partition, lag in self.partition_lag.items() if partition not in self.held):
            # Caught up: nothing waits for the consumer, so the stall clock starts from here, not from the last
            # batch, which an idle service committed long ago (a liveness probe would restart an idle service
            # seconds into a short database outage, as soon as work arrived).
            self.consumer_progress_at = self.kafka_ok_at
        self.lag.clear()
        for (topic, partition), lag in lags.items():
            self.lag.labels(topic, str(partition)).set(lag)
        self.assigned.set(len(lags))

    def set_input_partitions(self, partitions: int) -> None:
        """How many partitions the input topic has now (the consumer's metadata, refreshed at least every
        ``METADATA_MAX_AGE_MS``): the alert on unowned partitions compares the owned ones with it."""
        self.input_partitions.set(partitions)

    def set_meeting_key(self, own_version: int, newest_version: int | None) -> bool:
        """The sampled newest meeting key version on record against this instance's; returns whether this one is
        superseded (README, "The meeting secret": roll the new secret out before `meeting rekey`)."""
        superseded = newest_version is not None and newest_version > own_version
        self.meeting_key_superseded.set(1 if superseded else 0)
        return superseded

    def set_outbox(self, rows: int, oldest_age_s: float | None) -> None:
        """The sampled outbox backlog: unpublished ``rows`` and the oldest one's age in seconds (None: none waits),
        by the database's clock; the age gauge keeps ageing it until the next sample. The database answered."""
        self.outbox_rows.set(rows)
        self.outbox_waiting, self.database_ok_at = rows, time.monotonic()
        self._oldest_age_s = oldest_age_s
        self._oldest_sampled_at = time.monotonic()

    def _outbox_age_now(self) -> float:
        # Aged at scrape time from the database's own clock at sampling: no skew between hosts.
        if self._oldest_age_s is None:
            return 0.0
        return self._oldest_age_s + (time.monotonic() - self._oldest_sampled_at)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (version 0.0.4), for ``/metrics``."""
        return generate_latest(self.registry)
