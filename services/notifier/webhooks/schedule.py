"""When a failed delivery is tried again (pure): Svix's curve, cut to about 24 hours."""

from __future__ import annotations

from datetime import datetime, timedelta

# Seconds to wait after attempt 1, 2, ... fails; after the last one the delivery is failed.
# Attempts at about 0 s, 5 s, 5 min, 35 min, 2.6 h, 7.6 h, 15.6 h and 23.6 h.
RETRY_DELAYS_S: tuple[int, ...] = (5, 300, 1_800, 7_200, 18_000, 28_800, 28_800)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
# Each wait is stretched or shrunk by up to this fraction, so that receivers that come
# back after an outage are not hit by every retry in the same second.
JITTER = 0.1


def retry_at(attempts: int, now: datetime, spread: float) -> datetime | None:
    """When to try again after `attempts` failed attempts, or None when they are used up.

    `spread` is in [-1, 1] (a random draw, chosen by the caller so tests can fix it).
    """
    if attempts < 1 or attempts > len(RETRY_DELAYS_S):
        return None
    delay = RETRY_DELAYS_S[attempts - 1] * (1.0 + JITTER * max(-1.0, min(1.0, spread)))
    return now + timedelta(seconds=delay)
