"""How far an update has come, read from the board's console (no I/O: feed it lines).

At the verbose debug level a Sming device prints ``TCP … received: N bytes`` once its
TCP stack has handed over (and the application processed) each segment, and in standard
mode ``ota_write_flash: item.size: N``, the running count of bytes written to flash.
:class:`UpdateProgress` adds up the first into the bytes the board has received of the
update's MQTT PUBLISH packet (header + package; the 100 % mark) and keeps the second as
the bytes written. A board at the default debug level prints neither: the progress then
stays unknown (:attr:`UpdateProgress.known` is False) until the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from otalib.board.console import BOOT_EVENTS
from otalib.board.protocol import ConsoleLine
from otalib.mqtt.publish import publish_packet_size
from otalib.vocabulary import Outcome

KIB = 1024
KB = 1000
#: Segments counted before a rate is shown.
RATE_SEGMENTS = 3


@dataclass
class UpdateProgress:
    """Bytes of one update the board has received (and, in standard mode, written), from its console.

    ``payload``: the package's size in bytes; ``packet``: the PUBLISH packet the board receives
    (:meth:`for_package` computes it from the topic). Counting stops at the board's restart
    (what it receives after its reboot is not this update).
    """

    payload: int
    packet: int
    received: int = 0
    written: int | None = None
    first_t: float | None = None
    last_t: float | None = None
    outcome: Outcome | None = None
    restarted: bool = False
    segments: int = 0
    first_segment: int = 0

    @classmethod
    def for_package(cls, payload: int, topic: str) -> UpdateProgress:
        """The progress of a ``payload``-byte package published on ``topic`` (MQTT 3.1.1, delivered at QoS 0
        as the device subscribes)."""
        return cls(payload=payload, packet=publish_packet_size(topic, payload, qos=0, v5=False))

    def feed(self, line: ConsoleLine) -> bool:
        """Take one console line; True when it changed the progress."""
        if self.restarted:
            return False
        if line.event in BOOT_EVENTS:
            self.restarted = self.received > 0 or self.outcome is not None
            return False
        if line.event == "tcp_received":
            size = int(line.fields.get("length", 0))
            self.first_segment = self.first_segment or size
            self.received += size
            self.segments += 1
        elif line.event == "ota_write":
            self.written = int(line.fields.get("total", 0))
        else:
            return False
        if self.first_t is None:
            self.first_t = line.t
        self.last_t = line.t
        return True

    def decided(self, outcome: Outcome) -> None:
        """The update's outcome is known."""
        self.outcome = outcome

    @property
    def known(self) -> bool:
        """Did the console show any byte count (it does at the verbose debug level only)?"""
        return self.first_t is not None

    @property
    def fraction(self) -> float:
        """Received share of the PUBLISH packet, 0..1."""
        return min(1.0, self.received / self.packet) if self.packet else 0.0

    @property
    def rate_KBps(self) -> float | None:
        """Mean receive rate in KB/s (1 KB = 1000 B): the bytes after the first segment over the time from it
        to the last one (from the third segment on: the first ones come in a burst, from the buffers along
        the way)."""
        if self.segments < RATE_SEGMENTS or self.first_t is None or self.last_t is None or self.last_t <= self.first_t:
            return None
        return (min(self.received, self.packet) - self.first_segment) / (self.last_t - self.first_t) / KB

    def describe(self) -> str:
        """One line: ``45% received (236.0 / 512.0 KiB), 48.1 KB/s, 230.0 KiB written``."""
        if not self.known:
            text = f"waiting for the board's byte counts ({self.payload / KIB:.1f} KiB package)"
            if self.outcome is not None:
                text = "no byte counts on the console (the device prints them at the verbose debug level only)"
        else:
            got = min(self.received, self.packet)
            text = f"{self.fraction:.0%} received ({got / KIB:.1f} / {self.packet / KIB:.1f} KiB)"
            rate = self.rate_KBps
            if rate is not None:
                text += f", {rate:.1f} KB/s"
            if self.written is not None:
                text += f", {self.written / KIB:.1f} KiB written"
        if self.outcome is not None:
            text += f"; outcome: {self.outcome}"
        return text
