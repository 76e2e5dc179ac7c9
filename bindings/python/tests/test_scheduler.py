import math
import pickle

import pytest

from safestep import STATE_FORMAT, LayerScheduler, NoiseStats, SchedulerConfig


def noisy():
    return NoiseStats.from_variance(1.0, 64.0, 32)  # G² = 0: every bound is 0


def test_far_above_the_bound_cools_by_exactly_gamma_cool():
    s = LayerScheduler(SchedulerConfig(), 1e-3)
    r = s.observe(0.5, 10.0, noisy())
    assert r.decision == "cool"
    assert r.rho == 5.0 and r.bound == 0.0
    assert r.lr_before == 1e-3 and r.lr_after == 1e-3 * 0.99 == s.lr
    assert s.events == 1 and s.lr0 == 1e-3


def test_far_below_the_bound_early_warms():
    cfg = SchedulerConfig()
    s = LayerScheduler(cfg, 1e-3)
    quiet = NoiseStats.from_variance(1.0, 0.0, 32)  # no noise: SNR_g = inf, bound = 2s
    r = s.observe(1e-6, 1.0, quiet, step_in_task=0, steps_per_task=100)
    assert r.decision == "warm" and r.lr_after == 1e-3 * 1.01
    late = s.observe(1e-6, 1.0, quiet, step_in_task=90, steps_per_task=100)
    assert late.decision == "hold"


def test_mode_off_never_changes_lr():
    s = LayerScheduler(SchedulerConfig(mode="off"), 1e-3)
    for _ in range(5):
        assert s.observe(0.5, 10.0, noisy()).decision == "hold"
    assert s.lr == 1e-3


def test_report_fields_and_dict():
    s = LayerScheduler(None, 1e-3)
    r = s.observe(0.5, 10.0, noisy())
    d = r.to_dict()
    assert d["decision"] == "cool" and d["snr_v"] == math.inf
    for k, v in d.items():
        assert getattr(r, k) == v
    assert repr(r).startswith("Report(decision='cool'")


def test_state_dict_round_trip_continues_bit_identically():
    cfg = SchedulerConfig(volatility_estimator="ema", control="proportional")
    a = LayerScheduler(cfg, 1e-3)
    for k in range(7):
        a.observe(0.1 * (k + 1), 3.0 + k, NoiseStats.from_variance(0.5, 2.0 + k, 16))
    sd = a.state_dict()
    assert sd["state"][0] == STATE_FORMAT
    b = LayerScheduler(None, 1e-3)
    b.load_state_dict(sd)
    c = LayerScheduler.from_state_dict(sd)
    d = pickle.loads(pickle.dumps(a))
    assert b.config == cfg and d.config == cfg
    for k in range(10):
        n = NoiseStats.from_variance(0.3 + k, 1.0, 16)
        ra = a.observe(0.2, 4.0 - k, n)
        for other in (b, c, d):
            ro = other.observe(0.2, 4.0 - k, n)
            assert ro == ra
            assert [x.hex() for x in ro.to_dict().values() if isinstance(x, float)] == [
                x.hex() for x in ra.to_dict().values() if isinstance(x, float)
            ]
    assert a.state_dict() == b.state_dict() == c.state_dict() == d.state_dict()


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda sd: sd["state"].__setitem__(0, 9.0), ["state format", "9"]),
        (lambda sd: sd.__setitem__("state", sd["state"][:5]), ["state", "length"]),
        (lambda sd: sd["state"].__setitem__(1, 1.0), ["state lr"]),
        (lambda sd: sd["state"].__setitem__(3, float("nan")), ["state", "not finite"]),
        (lambda sd: sd.pop("config"), ["config"]),
        (lambda sd: sd["config"].__setitem__("mode", "fast"), ["mode", "fast"]),
    ],
)
def test_bad_state_is_rejected_and_changes_nothing(mutate, words):
    a = LayerScheduler(None, 1e-3)
    a.observe(0.5, 10.0, noisy())
    before = a.state_dict()
    sd = a.state_dict()
    mutate(sd)
    with pytest.raises(ValueError) as e:
        a.load_state_dict(sd)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert a.state_dict() == before


@pytest.mark.parametrize(
    "args, kwargs, words",
    [
        ((-0.1, 1.0), {}, ["alpha_agg", "-0.1"]),
        ((0.1, float("nan")), {}, ["sharpness", "not finite"]),
        ((0.1, 1.0), dict(mean_multiplier=-1.0), ["mean_multiplier"]),
        ((0.1, 1.0), dict(lr_used=float("inf")), ["lr_used"]),
        ((0.1, 1.0), dict(step=-3), ["step", "-3"]),
    ],
)
def test_bad_observations_raise_and_change_nothing(args, kwargs, words):
    s = LayerScheduler(None, 1e-3)
    before = s.state_dict()
    with pytest.raises(ValueError) as e:
        s.observe(*args, noisy(), **kwargs)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert s.state_dict() == before and s.events == 0


def test_lr0_outside_the_clamp_is_rejected():
    with pytest.raises(ValueError, match="lr0"):
        LayerScheduler(SchedulerConfig(), 1.0)


def test_task_boundaries():
    cfg = SchedulerConfig(boundary="reset-lr")
    s = LayerScheduler(cfg, 1e-3)
    s.observe(0.5, 10.0, noisy())
    assert s.lr < 1e-3
    s.reset_task()
    assert s.lr < 1e-3
    s.begin_task()
    assert s.lr == 1e-3
    carry = LayerScheduler(SchedulerConfig(), 1e-3)
    carry.observe(0.5, 10.0, noisy())
    before = carry.state_dict()
    carry.begin_task()
    assert carry.state_dict() == before


def test_config_may_be_a_dict_or_none():
    assert LayerScheduler({"mode": "gradient"}, 1e-3).config.mode == "gradient"
    assert LayerScheduler(None, 1e-3).config == SchedulerConfig()
    with pytest.raises(ValueError, match="speed"):
        LayerScheduler({"speed": 1}, 1e-3)
