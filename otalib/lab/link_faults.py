"""A fault string of a campaign spec on a lab session's link: armed at each deployment, fired in time.

:class:`LinkFaults` takes the faults of :class:`~otalib.lab.trial.FaultSpec` (``cut@F``, ``stall@F``,
``corrupt@F``, ``power-loss@F``; ``drops:rate=R``, ``outages:every=S,for=D``, ``power:p=P``,
``bitflips:ber=B``) onto a :class:`~otalib.net.link.LinkProxy` and the virtual board behind it, as a
trial does: each :meth:`LinkFaults.arm` (a deployment of ``n`` bytes) attaches the payload faults to
the open connection, draws a rate fault's realisation from its seed and the deployment's number
(:func:`~otalib.net.faults.trial_rng`: the same session and fault string draw the same events), and
a background thread fires the drops (due in seconds of connection), the outages and the power cut.
What fired is in :attr:`LinkFaults.events` (kind, t_s from the deployment, downstream offset,
duration_s), as a trial's fault side table.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from otalib.lab.trial import FaultSpec, payload_forwarded
from otalib.net.faults import FaultPlan, RateKind, connected_seconds, trial_rng
from otalib.net.link import LinkProxy

#: Seconds of timed events drawn per deployment, and how often they are fired.
HORIZON_S = 3600.0
TICK_S = 0.02
_POWER_KINDS = ("power-loss", RateKind.POWER.value)


class LinkFaults:
    """One fault string on ``proxy`` (and ``board``, for power losses); a context manager for its thread."""

    def __init__(self, proxy: LinkProxy, board: Any, fault: str, seed: int | None = None) -> None:
        """``seed``: the seed of a rate fault without its own ``seed=`` (as a campaign spec's ``seed:``)."""
        if seed is not None and fault and "seed=" not in fault and FaultSpec.parse(fault).rate is not None:
            fault = f"{fault},seed={seed}"
        self.spec = FaultSpec.parse(fault)
        self.fault = fault
        self.proxy, self.board = proxy, board
        self.deployments = 0
        self.plan = FaultPlan()
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._start: float | None = None  # monotonic time of the last deployment
        self._timed_done = 0
        self._fired_mark = 0
        self._power_cut = False
        self._cut_untaken = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="link-faults", daemon=True)

    def __enter__(self) -> LinkFaults:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def arm(self, payload_bytes: int) -> None:
        """A deployment of ``payload_bytes`` is about to be published: attach its faults, start its clock."""
        with self._lock:
            self.deployments += 1
            rate = self.spec.rate
            if rate is None:
                fault = self.spec.link_fault(payload_bytes)
                self.plan, faults = FaultPlan(), [fault] if fault is not None else []
            else:
                rng = trial_rng(rate.seed, f"session:{self.deployments}")
                self.plan = rate.draw(rng, payload_bytes, HORIZON_S)
                faults = self.plan.link_faults()
            self._fired_mark = len(self.proxy.stats["faults_fired"])
            for fault in faults:
                self.proxy.set_fault(fault, live=True)
            self._start = time.monotonic()
            self._timed_done = 0
            self._power_cut = False

    def take_power_cut(self) -> bool:
        """Whether a power cut happened that nobody has taken yet (the session's next reboot is its)."""
        with self._lock:
            taken, self._cut_untaken = self._cut_untaken, False
            return taken

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                if self._start is not None:
                    self._tick(self._start)

    def _tick(self, start: float) -> None:
        stats = self.proxy.stats
        now = time.monotonic() - start
        clock = now
        if self.spec.rate is not None and self.spec.rate.kind is RateKind.DROPS:
            clock = connected_seconds(stats, start)  # drops: R per second of connection
        for _t, kind, duration in self.plan.due(clock, self._timed_done):
            offset = payload_forwarded(stats)
            if kind == "drop":
                held = self.proxy.cut_all(abort=True)  # the retained message comes again at the board's resubscription
                if not held:
                    break  # the board left on its own since the clock was read: the drop waits for its return
                offset = held[-1]  # the package bytes the board's stack held (newest connection)
            else:
                self.proxy.stall(duration)
            self._timed_done += 1
            self.events.append({"kind": kind, "t_s": now, "offset": offset, "duration_s": duration})
            if kind == "drop":
                break  # the next drop falls on the next connection (two due at once: this tick came late)
        fired = stats["faults_fired"][self._fired_mark :]
        if self.spec.kind in _POWER_KINDS and not self._power_cut and any(k == "stall" for k, _o, _t in fired):
            self._power_cut = self._cut_untaken = True  # before the reboot can show on the console
            self.board.power_cycle()  # power lost mid-transfer, while the link holds the rest back
            self.proxy.resume()
            offset = next(o for k, o, _t in fired if k == "stall")
            self.events.append({"kind": "power", "t_s": now, "offset": offset, "duration_s": 0.0})
