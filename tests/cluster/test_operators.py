"""The operator's tools on the 3-master cluster: retrying a dead letter (one script in the
partition's slot) and the overview (pipelines across slots), the same tests as on one Redis."""

from __future__ import annotations

import pytest

from tests.integration.test_dead_letter_retry import (
    test_a_retried_dead_letter_resumes_from_its_first_step_without_completion,
    test_retry_all_retries_executions_and_reports_the_rest,
    test_two_concurrent_retries_resume_it_once,
)
from tests.integration.test_overview import test_queues_leases_and_workers_as_dispatch_leaves_them

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

__all__ = [
    "test_a_retried_dead_letter_resumes_from_its_first_step_without_completion",
    "test_queues_leases_and_workers_as_dispatch_leaves_them",
    "test_retry_all_retries_executions_and_reports_the_rest",
    "test_two_concurrent_retries_resume_it_once",
]
