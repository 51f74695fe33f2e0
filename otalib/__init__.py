"""otalib: build, sign, publish and watch OTA-over-MQTT firmware updates (Sming protocol)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
