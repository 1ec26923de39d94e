"""Reading a Prometheus scrape in tests: prometheus_client's parser, the families every endpoint
must serve, and the check that no label carries an id."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

# The store's figures, read at each scrape (clipstream_redis_memory_* only on a real Redis: the
# embedded store has no INFO).
STORE_FAMILIES = (
    "clipstream_queue_depth",
    "clipstream_leases",
    "clipstream_oldest_pending_age_seconds",
    "clipstream_dead_letter_entries",
    "clipstream_projection_lag_entries",
    "clipstream_projection_lag_seconds",
    "clipstream_workers_live",
    "clipstream_archive_configured",
    "clipstream_archive_lag_entries",
    "clipstream_scrape_store_ok",
)
# The process's own meters (engine.meters): served by every role, counted by the one that works.
PROCESS_FAMILIES = (
    "clipstream_http_requests",
    "clipstream_http_request_duration_seconds",
    "clipstream_executions_accepted",
    "clipstream_executions_ended",
    "clipstream_step_duration_seconds",
    "clipstream_step_cost_coins",
    "clipstream_lease_takeovers",
    "clipstream_dead_letters",
    "clipstream_coins_charged",
    "clipstream_coins_refunded",
    "clipstream_redis_errors",
    "clipstream_schedule_ticks",
    "clipstream_archive_segments_written",
    "clipstream_feed_slow_client_closes",
)

# What an id looks like (engine.log.ids): a type prefix then the body; executions carry p<N>.
ID = re.compile(r"(acc|itm|col|rep|wf|stp|sch|exc|doc|run|req|key)_[0-9a-z_]{8,}")
ID_LABELS = {"execution_id", "account_id", "owner", "request_id", "item_id", "worker_id"}


def samples(text: str) -> dict[str, list[Sample]]:
    """The exposition text parsed by prometheus_client: family name -> its samples."""
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def value(found: dict[str, list[Sample]], family: str, sample: str, **labels: str) -> float:
    """One sample's value (0 when it is not there yet: a counter not yet counted)."""
    for s in found.get(family, []):
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return 0.0


def assert_no_id_labels(found: dict[str, list[Sample]]) -> None:
    for family, rows in found.items():
        for s in rows:
            assert not ID_LABELS & set(s.labels), (family, s.labels)
            for v in s.labels.values():
                assert not ID.search(v), (family, s.labels)
