"""A lab session takes a campaign spec's fault strings on its link proxy (real Mosquitto, virtual board)."""

from __future__ import annotations

import pytest

from otalib.board.sim.build import DeviceBuild
from otalib.broker import find_mosquitto
from otalib.errors import LabError, UsageError
from otalib.firmware.demo import make_demo_image
from otalib.formats.version import Version
from otalib.keys import DeviceKeys, generate_key_file
from otalib.lab.session import LabSession
from otalib.net.faults import RateFault, trial_rng
from otalib.net.link import LinkProfile
from otalib.update import make_update
from otalib.vocabulary import Outcome, OutcomeKind, UpdateMode

pytestmark = [
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed"),
    pytest.mark.timeout(120),
]

SLOW = LinkProfile(8000.0, 0.0, "slow-8k", up_rate_Bps=8000.0)  # a 24 KiB package takes 3 s


def _session(tmp_path, **options):
    key, _ = generate_key_file(tmp_path / "ota.key")
    build = DeviceBuild(app_id="test", version=Version(4, 3, 1)).accepting(UpdateMode.SIGNED, DeviceKeys.of(key))
    session = LabSession(build=build, workdir=tmp_path / "s", backend="mosquitto", **options)
    image = make_demo_image("esp8266", "test", "4.3.2", size=24 * 1024)
    return session, make_update(image, UpdateMode.SIGNED, patch=2, key=key, build=session.build)


@pytest.mark.parametrize(
    ("fault", "error", "needle"),
    [("drops:rate=fast", LabError, "bad rate"), ("melt@0.5", LabError, "unknown fault 'melt@0.5'")],
)
def test_a_bad_fault_is_one_line_before_anything_starts(tmp_path, fault, error, needle):
    with pytest.raises(error, match=needle) as caught:
        LabSession(workdir=tmp_path, backend="mosquitto", fault=fault)
    assert "\n" not in str(caught.value) and not (tmp_path / "broker").exists()
    with pytest.raises(UsageError, match="a fault needs the virtual board"):
        LabSession(board="/dev/ttyUSB0", broker_url="mqtt://127.0.0.1:1", fault="cut@0.5")


def test_a_cut_strikes_the_deployed_package_and_the_retained_copy_comes_again(tmp_path):
    session, update = _session(tmp_path, fault="cut@0.5", link=SLOW)
    with session:
        session.wait_ready()
        session.deploy(update)
        session.watch(60)
        fired = session.link.stats["faults_fired"]
        results = [r.outcome.value for r in session.board.updates]
    assert session.outcome == Outcome(OutcomeKind.UPDATED)
    assert [kind for kind, _offset, _t in fired] == ["cut"] and results[:2] == ["abandoned", "applied"]


def test_power_at_a_rate_cuts_the_boards_power_mid_transfer(tmp_path):
    session, update = _session(tmp_path, fault="power:p=1", seed=3)
    with session:
        session.wait_ready()
        session.deploy(update)
        session.watch(60)
        results = [r.outcome.value for r in session.board.updates]
        plan, events = session.faults.plan, list(session.faults.events)
    assert session.outcome == Outcome(OutcomeKind.UPDATED)
    drawn = RateFault.parse("power:p=1,seed=3").draw(trial_rng(3, "session:1"), len(update.package), 3600.0)
    assert plan == drawn and plan.power_at is not None  # the seed and the deployment's number
    assert [e["kind"] for e in events] == ["power"] and results[:2] == ["abandoned", "applied"]


def test_drops_at_a_rate_disconnect_the_board_when_due_and_the_update_gets_through(tmp_path):
    # seed 4 draws drops at 0.94 s and 4.64 s of connection: the first cuts the 3 s transfer, the retry
    # gets through before the second
    session, update = _session(tmp_path, fault="drops:rate=0.25", seed=4, link=SLOW)
    with session:
        session.wait_ready()
        session.deploy(update)
        session.watch(90)
        plan, events = session.faults.plan, list(session.faults.events)
        connections = session.link.stats["connections"]
    assert session.faults.fault == "drops:rate=0.25,seed=4"
    assert plan.drops_s[0] < 1.0 and plan.drops_s[1] > 4.5 and events and events[0]["kind"] == "drop"
    assert events[0]["t_s"] == pytest.approx(plan.drops_s[0], abs=0.5)  # fired when due
    assert session.outcome == Outcome(OutcomeKind.UPDATED) and connections >= 2
