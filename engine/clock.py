"""The one wall clock: milliseconds since the epoch, as the writers stamp events, ledger entries,
ids and records. For display and retention only: ordering is by ``seq`` and stream ids.

Pure code never reads it: engine.run.plan, the fold and the billing arithmetic are given the time.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, from this process's clock."""
    return int(time.time() * 1000)
