"""The health verdict (booking_sessions/observe/health.py): a part is stalled only when work waits and nothing moved."""

from __future__ import annotations

from typing import Any

import pytest

from booking_sessions.observe.health import Health, Observed, assess
from booking_sessions.observe.metrics import Metrics
from booking_sessions.observe.sampler import Sampler

GROUP = {"ok": True, "state": "assigned", "partitions": 12, "since_s": 3.0}


def observed(**changes: Any) -> Observed:
    values: dict[str, Any] = {
        "now": 1000.0,
        "lag": 0,
        "consumer_progress_at": 990.0,
        "consumer_error": None,
        "outbox_rows": 0,
        "relay_progress_at": 999.0,
        "relay_error": None,
        "database_ok_at": 998.0,
        "database_error": None,
        "kafka_ok_at": 999.0,
        "kafka_error": None,
        "group": GROUP,
    }
    return Observed(**(values | changes))


def judge(seen: Observed) -> tuple[bool, bool, dict[str, Any], dict[str, Any]]:
    verdict = assess(seen, stall_after_s=120.0, stale_after_s=10.0)
    return verdict.ready, verdict.alive, verdict.readiness, verdict.liveness


def test_idle_and_healthy_is_ready_and_alive() -> None:
    ready, alive, readiness, liveness = judge(observed(consumer_progress_at=0.0, relay_progress_at=0.0))
    assert ready and alive  # nothing waits: a long quiet time is no stall
    assert readiness["status"] == "ready" and liveness == {"status": "ok"}


@pytest.mark.parametrize(("waiting", "idle_s", "stalled"), [(5, 119.0, False), (5, 120.0, True), (0, 500.0, False)])
def test_the_consumer_stalls_when_lag_waits_and_no_batch_committed(waiting: int, idle_s: float, stalled: bool) -> None:
    seen = observed(lag=waiting, consumer_progress_at=1000.0 - idle_s, consumer_error="timeout (TimeoutError)")
    ready, alive, readiness, liveness = judge(seen)
    assert (ready, alive) == (not stalled, not stalled)
    assert readiness["checks"]["consumer"]["stalled"] is stalled
    if stalled:
        assert liveness == {
            "status": "stalled",
            "stalled": {"consumer": "5 waiting, no progress for 120 s; last error: timeout (TimeoutError)"},
        }
    else:
        assert liveness == {"status": "ok"}


def test_the_relay_stalls_when_rows_wait_and_no_step_ended() -> None:
    ready, alive, readiness, liveness = judge(observed(outbox_rows=40, relay_progress_at=800.0))
    assert not ready and not alive
    assert readiness["checks"]["relay"] == {
        "ok": False,
        "stalled": True,
        "since_progress_s": 200.0,
        "why": "40 waiting, no progress for 200 s",
        "unpublished_rows": 40,
    }
    assert set(liveness["stalled"]) == {"relay"}


def test_a_database_that_stopped_answering_is_not_ready_but_alive() -> None:
    ready, alive, readiness, _ = judge(observed(database_ok_at=900.0, database_error="connection (OSError)"))
    assert not ready and alive  # a restart would not bring the database back
    assert readiness["checks"]["database"] == {"ok": False, "error": "connection (OSError)"}


def test_a_broker_that_stopped_answering_is_not_ready() -> None:
    ready, alive, readiness, _ = judge(observed(kafka_ok_at=980.0, kafka_error="timeout (TimeoutError)"))
    assert not ready and alive
    assert readiness["checks"]["kafka"] == {"ok": False, "error": "timeout (TimeoutError)"}


def test_no_sample_yet_is_not_ready() -> None:
    ready, alive, readiness, _ = judge(observed(database_ok_at=None, kafka_ok_at=None, lag=None, outbox_rows=None))
    assert not ready and alive
    assert readiness["checks"]["database"] == readiness["checks"]["kafka"] == {"ok": False, "error": "no answer yet"}


def test_a_lost_group_is_not_ready() -> None:
    ready, alive, _, _ = judge(observed(group={"ok": False, "state": "joining", "partitions": 0, "since_s": 1.0}))
    assert not ready and alive


def test_a_stale_sample_claims_no_stall() -> None:
    """The broker stopped answering the sampler: the last lag known says nothing about now."""
    seen = observed(lag=1000, consumer_progress_at=0.0, kafka_ok_at=900.0, kafka_error="kafka (KafkaTimeoutError)")
    ready, alive, readiness, _ = judge(seen)
    assert not ready and alive
    consumer = readiness["checks"]["consumer"]
    assert consumer["stalled"] is False and consumer["lag_records"] is None
    stale_db = observed(outbox_rows=40, relay_progress_at=0.0, database_ok_at=900.0, database_error="timeout (X)")
    assert judge(stale_db)[1] is True


def test_the_stall_clock_starts_when_work_arrives_not_at_an_idle_services_last_batch() -> None:
    """Found by trying: idle for longer than BOOKING_STALL_AFTER_S, then a short database outage as records
    arrived, and /healthz said "stalled" two seconds later (counted from the last batch, committed long before)."""
    metrics = Metrics()
    health = Health(metrics, lambda: GROUP, stall_after_s=20.0, interval_s=1.0, refresh_s=1.0)
    metrics.consumer_progress_at -= 600.0  # the last batch, ten minutes ago
    metrics.set_outbox(0, None)
    metrics.set_lag({("booking.events", 0): 0, ("booking.events", 1): 0})  # caught up
    metrics.set_lag({("booking.events", 0): 12, ("booking.events", 1): 0})  # work arrives; the database is away
    verdict = health.assess_now()
    assert verdict.alive, verdict.liveness
    assert verdict.readiness["checks"]["consumer"]["since_progress_s"] < 5
    metrics.consumer_progress_at -= 20.0  # and twenty seconds later, still nothing committed: that is a stall
    assert not health.assess_now().alive


# What /readyz says is wrong names the outage at hand: an answer clears the cause of an earlier failure, and a
# server silent since its last answer is "no answer for N s" until the sample's deadline says more (a newcomer's
# find: a frozen database was shown as the refused connection of a stop a minute before).
def test_a_server_silent_since_its_last_answer_says_for_how_long() -> None:
    _, _, readiness, _ = judge(observed(database_ok_at=970.0, kafka_ok_at=985.0))
    assert readiness["checks"]["database"] == {"ok": False, "error": "no answer for 30 s"}
    assert readiness["checks"]["kafka"] == {"ok": False, "error": "no answer for 15 s"}


@pytest.mark.parametrize(
    ("sample", "bounded", "cause"),
    [
        ("sample_outbox", "_sample_outbox_bounded", "database_error"),
        ("sample_lag", "_sample_lag_bounded", "kafka_error"),
    ],
)
async def test_an_answer_clears_the_cause_of_the_last_failure(sample: str, bounded: str, cause: str) -> None:
    metrics = Metrics()
    sampler = Sampler(None, None, metrics, interval_s=1.0)  # type: ignore[arg-type]
    outcomes: list[Exception | None] = [ConnectionRefusedError(), None]

    async def answer(*_: Any) -> None:
        if (outcome := outcomes.pop(0)) is not None:
            raise outcome

    setattr(sampler, sample, answer)
    assert await getattr(sampler, bounded)() is not None
    assert getattr(metrics, cause) == "connection (ConnectionRefusedError)"
    assert await getattr(sampler, bounded)() is None
    assert getattr(metrics, cause) is None
