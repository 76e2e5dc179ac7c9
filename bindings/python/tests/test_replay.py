"""Decisions through the bindings are bit-identical to safestep-core's on recorded streams."""

import json

import pytest

from safestep import replay


def test_core_streams_replay_bit_identically(data_dir):
    results = replay.replay_streams(data_dir / "core_streams.json")
    assert len(results) >= 8
    for name, res in results.items():
        res.check()
        assert res.events > 0, name
    # The recorded streams exercise every decision.
    seen = set()
    for res in results.values():
        seen |= set(res.decisions)
    assert seen == {"cool", "warm", "hold"}


def test_a_changed_constant_is_detected(data_dir, tmp_path):
    doc = json.loads((data_dir / "core_streams.json").read_text())
    doc["scenarios"] = doc["scenarios"][:1]
    doc["scenarios"][0]["config"]["cool"] = (0.98).hex()
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(doc))
    (res,) = replay.replay_streams(path).values()
    assert res.mismatches
    with pytest.raises(AssertionError):
        res.check()


def test_run_like_controller_csv_replays_bit_identically(data_dir):
    res = replay.replay_controller_csv(
        data_dir / "synthetic_controller.csv", data_dir / "synthetic_config.toml"
    )
    res.check()
    assert res.events == 93


def test_a_changed_csv_value_is_detected(data_dir, tmp_path):
    lines = (data_dir / "synthetic_controller.csv").read_text().splitlines()
    head = lines[0].split(",")
    row = lines[5].split(",")
    i = head.index("sharpness")
    row[i] = repr(float(row[i]) * 1.0000001)
    lines[5] = ",".join(row)
    path = tmp_path / "controller.csv"
    path.write_text("\n".join(lines) + "\n")
    res = replay.replay_controller_csv(path, data_dir / "synthetic_config.toml")
    assert any("rho" in m for m in res.mismatches)


def test_steps_per_task_counts_like_the_host():
    assert replay.steps_per_task(1000, 256, 20) == 80
    assert replay.steps_per_task(1001, 500, 1) == 2  # a last batch of 1 is dropped


@pytest.mark.parametrize("run", ["run_combined", "run_readings"])
def test_a_real_safestep_run_replays_bit_identically(data_dir, run):
    # controller.csv and config.toml of `safestep run --tasks 3 --epochs 10` (the combined
    # scheduler; and step-decay with reset-lr, proportional control, the momentum threshold
    # and the preconditioned measure).
    res = replay.replay_controller_csv(data_dir / run / "controller.csv")
    res.check()
    assert res.events == 33
