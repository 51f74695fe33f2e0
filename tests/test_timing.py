"""The device timing model: cited figures, a believable breakdown, seeded draws, the device spending them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from board_helpers import deliver, firmware, make_device, make_flash, signed_package, standard_package

from otalib.board.sim import timing
from otalib.board.sim.timing import TimingModel, VirtualClock, calibration_table, chip, update_breakdown
from otalib.errors import UsageError
from otalib.vocabulary import TimingProfile

MiB = 1 << 20
CHIPS = [p for p in TimingProfile if p is not TimingProfile.NONE]


def _entries(node, path=()):
    """Every figure table of the data file (a dict with a value), with its path."""
    for key, value in node.items():
        if isinstance(value, dict):
            if {"typical", "Bps", "bytes"} & set(value):
                yield (*path, key), value
            else:
                yield from _entries(value, (*path, key))


def test_every_figure_in_the_data_file_has_a_source_or_an_estimate():
    data = timing._data()
    entries = list(_entries(data))
    assert len(entries) >= 21  # flash, crypto, network and boot figures (esp8266-160 derives from esp8266)
    for path, value in entries:
        cited = str(value.get("source", "")).strip() or str(value.get("estimate", "")).strip()
        assert cited, f"{'.'.join(path)} has neither a source nor an estimate"
    assert data["variation"]["estimate"].strip()
    for row in calibration_table().itertuples():
        assert row.source.strip() and row.published_s > 0 and math.isfinite(row.ratio)
    frame = timing.figures_frame()
    assert ((frame["source"].str.strip() != "") | (frame["estimate"].str.strip() != "")).all()


@pytest.mark.parametrize("profile", CHIPS)
def test_every_chip_has_the_figures_the_model_uses(profile):
    model = TimingModel(profile, 0)
    for name in ("sector_erase_s", "page_program_s", "sha512", "md5", "xchacha20poly1305", "ed25519_verify_s"):
        assert model.chip[name].typical > 0
    assert model.chip["sector_erase_s"].typical == 0.045 and model.chip["sector_erase_s"].max == 0.400
    assert model.chip["page_program_s"].typical == 0.0004 and model.chip["page_program_s"].max == 0.003
    assert 1000 < model.chip.tcp_mss <= 1460 and 2 * model.chip.tcp_mss <= model.chip.tcp_window
    assert model.boot() > 0 and model.wifi() > model.boot() and model.mqtt_connect() > 0


def test_a_signed_1_mib_update_on_esp8266_is_dominated_by_erase_and_write_with_verify_visible():
    phases = update_breakdown("esp8266", MiB, "signed", seed=1)
    flash_s = phases["erase_s"] + phases["write_s"]
    busy = flash_s + phases["verify_s"] + phases["switch_s"]
    assert flash_s > 0.6 * busy  # erase and write dominate the device's work
    assert phases["erase_s"] > phases["write_s"] > 0
    # 256 sector erases and 4096 page programs, each between the datasheet's typical and max
    assert 256 * 0.045 <= phases["erase_s"] <= 256 * 0.400
    assert 4096 * 0.0004 <= phases["write_s"] <= 4096 * 0.003
    assert phases["verify_s"] > 0.05 * flash_s  # SHA-512 of 1 MiB and an Ed25519 verify: visible
    assert phases["receive_s"] == 0.0 and phases["reboot_s"] > 0 and phases["reconnect_s"] > phases["reboot_s"]
    standard = update_breakdown("esp8266", MiB, "standard", seed=1)
    assert standard["verify_s"] == 0.0 and standard["erase_s"] == phases["erase_s"]  # same seed, same erases


def test_verify_costs_scale_with_the_cpu_and_the_mode():
    verify = {p: update_breakdown(p, MiB, "signed+encrypted", seed=3)["verify_s"] for p in CHIPS}
    assert verify[TimingProfile.ESP8266] == pytest.approx(2 * verify[TimingProfile.ESP8266_160])
    assert verify[TimingProfile.ESP8266_160] > verify[TimingProfile.ESP32]
    signed = update_breakdown("esp8266", MiB, "signed", seed=3)["verify_s"]
    md5 = update_breakdown("esp8266", MiB, "md5", seed=3)["verify_s"]
    assert verify[TimingProfile.ESP8266] > signed > md5 > 0  # decryption on top of the hash; MD5 is cheap


def test_same_seed_same_draws_other_seed_other_draws():
    assert update_breakdown("esp32", MiB, seed=7) == update_breakdown("esp32", MiB, seed=7)
    assert update_breakdown("esp32", MiB, seed=7)["erase_s"] != update_breakdown("esp32", MiB, seed=8)["erase_s"]
    # a total depends on how many operations ran, not on how they were grouped
    split, whole = TimingModel("esp8266", 5), TimingModel("esp8266", 5)
    grouped = sum(split.erase_sectors(n) for n in (3, 1, 4)) + split.program_pages(9)
    assert grouped == pytest.approx(whole.program_pages(9) + whole.erase_sectors(8))


def test_none_has_no_figures_and_a_bad_profile_names_the_choices():
    with pytest.raises(UsageError, match="none"):
        chip("none")
    with pytest.raises(UsageError, match="esp8266-160"):
        TimingModel("esp8285")


class _Recording(TimingModel):
    """A model that records the erases and page programs asked of it, in order."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.calls: list[tuple[str, int]] = []

    def erase_sectors(self, count: int = 1) -> float:
        self.calls.append(("erase", count))
        return super().erase_sectors(count)

    def program_pages(self, count: int) -> float:
        self.calls.append(("program", count))
        return super().program_pages(count)


def test_the_device_erases_each_sector_before_it_writes_there_and_spends_the_time(tmp_path):
    size = 64 * 1024
    with make_flash(tmp_path / "flash.bin", "4.3.5") as flash:
        device, _out = make_device(flash, mode="standard", key=None)
        model, clock = _Recording("esp8266", 2), VirtualClock()
        device.timing, device.pacer = model, clock
        device.boot()
        result = deliver(device, standard_package("4.3.6", 6, size=size), 1460)
    assert result.outcome == "applied"
    erased = programmed = 0
    for kind, count in model.calls:
        if kind == "erase":
            erased += count
        else:
            programmed += count
            assert programmed * 256 <= erased * 4096  # never a page programmed in a sector not erased yet
    sectors = math.ceil(result.payload_bytes / 4096)
    # the slot's sectors, then rBoot's configuration sector at the switch
    assert erased == sectors + 1 and model.calls[-1] == ("erase", 1)
    assert programmed == math.ceil(result.payload_bytes / 256)
    times = result.device_time
    assert sectors * 0.045 <= times["erase_s"] <= sectors * 0.4
    assert times["verify_s"] == 0.0 and times["switch_s"] > 0 and times["reboot_s"] > 0
    spent = sum(times[name] for name in ("erase_s", "write_s", "verify_s", "switch_s"))
    assert clock.now() == pytest.approx(spent)  # the device spent what it reports, through its pacer
    assert times["receive_s"] == pytest.approx(0.0, abs=1e-9)  # a virtual clock never waits for data


def test_device_phases_do_not_depend_on_how_tcp_cut_the_stream(tmp_path):
    package = signed_package("4.3.6", 6, image=firmware("4.3.6", patch=6, size=100_000))
    results = []
    for chunk in (1460, 536, 9000):
        with make_flash(tmp_path / f"flash{chunk}.bin", "4.3.5") as flash:
            device, _out = make_device(flash)
            device.timing, device.pacer = TimingModel("esp8266", 11), VirtualClock()
            device.boot()
            results.append(deliver(device, package, chunk).device_time)
    first = results[0]
    assert first["verify_s"] > 0.25  # SHA-512 of the file and the Ed25519 verify (0.25 s on esp8266)
    for other in results[1:]:
        assert other == pytest.approx(first)


def test_without_a_timing_model_the_device_reports_no_device_time(tmp_path):
    with make_flash(tmp_path / "flash.bin", "4.3.5") as flash:
        device, _out = make_device(flash)
        device.boot()
        result = deliver(device, signed_package("4.3.6", 6), 1460)
    assert result.outcome == "applied" and result.device_time == {} and result.erase_s is None
    assert result.to_dict()["erase_s"] is None  # the update line carries the phases (null here)


def test_calibration_table_compares_the_model_with_published_figures():
    table = calibration_table()
    assert list(table.columns) == [
        "name",
        "chip",
        "bytes",
        "published_s",
        "model_s",
        "ratio",
        "includes",
        "source",
    ]
    assert len(table) >= 4 and set(table["chip"]) == {"esp8266", "esp32"}
    by_name = table.set_index("name")
    sector = by_name.loc[by_name.index.str.contains("erase as you write"), "model_s"].iloc[0]
    block = by_name.loc[by_name.index.str.contains("erased first"), "model_s"].iloc[0]
    assert block < sector  # 64 KiB block erases are faster per byte than 4 KiB sector erases, as published
    assert table["ratio"].between(0.2, 5).all()  # the model is within a small factor of every published figure


def test_docs_show_the_current_calibration_and_every_figure():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "timing.md").read_text(encoding="utf-8")
    for row in calibration_table().itertuples():
        assert f"| {row.name} | {row.published_s:g} | {row.model_s:.2f} | {row.ratio:.2f} |" in text, row.name
    for name in timing.figures_frame()["figure"]:
        assert f"| {name} |" in text, name


def test_a_campaign_takes_timing_as_a_parameter_and_a_grid_axis():
    from otalib.errors import LabError
    from otalib.lab.campaign import CampaignSpec

    spec = CampaignSpec.from_dict({"name": "t", "grid": {"timing": ["none", "esp8266", "esp32"]}})
    assert [t.timing for t in spec.trials()] == [TimingProfile.NONE, TimingProfile.ESP8266, TimingProfile.ESP32]
    fixed = CampaignSpec.from_dict({"name": "t", "grid": {"size": [1024]}, "fixed": {"timing": "esp8266-160"}})
    assert {t.timing for t in fixed.trials()} == {TimingProfile.ESP8266_160}
    with pytest.raises(LabError, match="timing") as info:
        CampaignSpec.from_dict({"name": "t", "grid": {"timing": ["esp9000"]}}).trials()
    assert "\n" not in str(info.value)


def test_a_trial_draws_its_timing_from_the_campaign_seed_and_its_id():
    from otalib.lab.schema import TrialConfig
    from otalib.lab.trial import Bench, Trial

    def draw(seed: int, **params) -> float:
        with Bench(seed=seed) as bench:
            return float(Trial(bench, TrialConfig(timing="esp8266", **params))._timing_rng().random())

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)  # the campaign's seed
    assert draw(1) != draw(1, repeat=1)  # the trial id
    fault = "drops:rate=0.1,seed=9"
    assert draw(1, fault=fault) == draw(2, fault=fault)  # a rate fault's own seed wins, as for its draws


def test_a_trial_row_sums_the_device_time_of_its_messages():
    from otalib.board.sim.device import UpdateResult
    from otalib.lab.trial import _device_time
    from otalib.vocabulary import Decision

    cut = UpdateResult(Decision.ABANDONED, 6, receive_s=0.5, erase_s=1.0, write_s=0.25, verify_s=0.125)
    applied = UpdateResult(Decision.APPLIED, 6, erase_s=2.0, write_s=0.5, verify_s=0.25, switch_s=0.05, reboot_s=0.3)
    instant = UpdateResult(Decision.SKIPPED, 6)
    total = _device_time([cut, instant, applied])
    assert total == {
        "receive_s": 0.5,
        "erase_s": 3.0,
        "write_s": 0.75,
        "verify_s": 0.375,
        "switch_s": 0.05,
        "reboot_s": 0.3,
    }
    assert _device_time([instant]) == {}


def test_block_draws_give_exactly_the_values_of_one_draw_per_call():
    """The model draws spreads in blocks; each total is bit-identical to drawing ``count`` values per call."""

    def reference(twin: TimingModel, name: str, count: int) -> float:
        if count <= 0:
            return 0.0
        fig = twin.chip[name]
        assert fig.max is not None
        spread = twin._rngs[name].beta(1.0, twin.chip.beta, size=count)  # the same stream, one call at a time
        return float(count * fig.typical + (fig.max - fig.typical) * spread.sum())

    counts = np.random.default_rng(1).choice([0, 1, 2, 5, 6, 7, 8, 9, 16, 700], size=3000)
    for seed in range(3):
        model, twin = TimingModel("esp8266", seed), TimingModel("esp8266", seed)
        for i, count in enumerate(counts):
            name = ("sector_erase_s", "page_program_s")[i % 2]
            assert model.draw(name, int(count)) == reference(twin, name, int(count))
