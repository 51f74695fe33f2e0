"""A virtual fleet: many boards in one process (or Dask shards) taking one retained update.

:class:`FleetSession` runs a :class:`FleetSpec`; :class:`FleetResult` holds its tidy frames
(:func:`load_fleet` reads a written one); :mod:`otalib.fleet.charts` draws them.
"""

from otalib.fleet.results import FleetResult, load_fleet
from otalib.fleet.session import FleetSession
from otalib.fleet.spec import FleetSpec, GroupSpec, UpdateSpec

__all__ = ["FleetResult", "FleetSession", "FleetSpec", "GroupSpec", "UpdateSpec", "load_fleet"]
