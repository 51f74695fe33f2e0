"""Security experiments: try an action, record whether it was refused and why (for notebooks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from otalib.errors import OtaLabError


def attempt(label: str, action: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run ``action``; return ``{case, accepted, seconds, error}`` instead of raising otalib errors."""
    start = time.monotonic()
    try:
        action(*args, **kwargs)
    except OtaLabError as exc:
        return {"case": label, "accepted": False, "seconds": time.monotonic() - start, "error": str(exc)}
    return {"case": label, "accepted": True, "seconds": time.monotonic() - start, "error": ""}
