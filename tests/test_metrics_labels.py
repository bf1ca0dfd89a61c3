"""``LabelledChildren``: cached children of labelled metrics count into the registry, and a
child dropped through the cache is created afresh (and exported again) on its next use."""

from __future__ import annotations

from scheduler.runtime.metrics import Metrics


def _value(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_cached_children_are_the_metrics_own() -> None:
    metrics = Metrics()
    counts = metrics.event_counts
    assert counts("JobSubmitted") is counts("JobSubmitted")
    assert counts("JobSubmitted") is metrics.events.labels("JobSubmitted")
    counts("JobSubmitted").inc()
    metrics.events.labels("JobSubmitted").inc()
    assert _value(metrics, "firsthop_events_total", {"event": "JobSubmitted"}) == 2.0
    metrics.rpc_durations("SubmitJob", "OK").observe(0.002)
    assert (
        _value(
            metrics, "firsthop_rpc_duration_seconds_count", {"method": "SubmitJob", "code": "OK"}
        )
        == 1.0
    )
    metrics.command_counts("start").inc(3)
    assert _value(metrics, "firsthop_agent_commands_total", {"kind": "start"}) == 3.0


def test_removed_children_are_created_again() -> None:
    metrics = Metrics()
    counts = metrics.event_counts
    old = counts("TimerFired")
    old.inc(5)
    counts.remove("TimerFired")
    assert _value(metrics, "firsthop_events_total", {"event": "TimerFired"}) is None
    new = counts("TimerFired")
    assert new is not old
    new.inc()
    assert _value(metrics, "firsthop_events_total", {"event": "TimerFired"}) == 1.0
    counts("JobSubmitted").inc()
    counts.clear()
    assert _value(metrics, "firsthop_events_total", {"event": "JobSubmitted"}) is None
    assert _value(metrics, "firsthop_events_total", {"event": "TimerFired"}) is None
    counts("JobSubmitted").inc(2)
    assert _value(metrics, "firsthop_events_total", {"event": "JobSubmitted"}) == 2.0
