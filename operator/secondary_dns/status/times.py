"""Times as the API stores them (metav1.Time) and durations as people read them."""

from __future__ import annotations

import datetime

_RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def timestamp_text(epoch: float) -> str:
    """RFC 3339 in UTC with a Z, as metav1.Time serialises (seconds precision)."""
    moment = datetime.datetime.fromtimestamp(int(epoch), tz=datetime.UTC)
    return moment.strftime(_RFC3339)


def parse_timestamp(text: object) -> float | None:
    """The inverse of timestamp_text; None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.datetime.strptime(text, _RFC3339)
    except ValueError:
        return None
    return moment.replace(tzinfo=datetime.UTC).timestamp()


def format_duration(seconds: float) -> str:
    """A duration for people: 45s, 2m5s, 3h0m, 2d4h."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
