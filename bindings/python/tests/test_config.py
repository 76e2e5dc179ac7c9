import pickle

import pytest

import safestep
from safestep import SchedulerConfig

# DESIGN.md's defaults, as the core declares them (the stub test checks the stub's too).
DEFAULTS = dict(
    mode="combined", measure="normalized", interval=10, safety=0.8, beta=1.0, window=20,
    snr_ema_decay=0.9, snr_estimator="ema", volatility_estimator="window", cool=0.99,
    warm=1.01, warm_fraction=0.3, timid=0.1, lr_min=1e-6, lr_max=1e-2, boundary="carry",
    threshold="sgd", noise_averaging="minibatch", control="early-warm", kappa=1.0, beta1=0.9,
)


def test_defaults_are_the_cores():
    c = SchedulerConfig()
    d = c.to_dict()
    for k, v in DEFAULTS.items():
        assert d[k] == v, k
        assert getattr(c, k) == v, k
    assert tuple(d) == SchedulerConfig.FIELDS


def test_every_field_is_settable_by_name():
    changed = dict(
        mode="gradient", measure="preconditioned", interval=3, safety=0.5, beta=2.0, window=7,
        snr_ema_decay=0.5, snr_estimator="raw", volatility_estimator="ema", cool=0.9,
        warm=1.1, warm_fraction=0.5, timid=0.2, lr_min=1e-5, lr_max=1e-1, boundary="reset-lr",
        threshold="momentum", noise_averaging="momentum", control="proportional", kappa=0.5,
        beta1=0.8,
    )
    assert set(changed) == set(SchedulerConfig.FIELDS)
    c = SchedulerConfig(**changed)
    assert c.to_dict() == changed


def test_enum_names_are_the_cores():
    for field, names in safestep.OPTIONS.items():
        if field == "decision":
            continue
        for n in names:
            assert getattr(SchedulerConfig(**{field: n}), field) == n
    # Every string-valued field has its names listed.
    strings = {k for k, v in SchedulerConfig().to_dict().items() if isinstance(v, str)}
    assert strings <= set(safestep.OPTIONS)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(speed=1.0), ["speed", "unknown field"]),
        (dict(mode="fast"), ["mode", "fast", "combined"]),
        (dict(cool=1.5), ["cool", "1.5", "(0, 1]"]),
        (dict(safety=float("nan")), ["safety", "NaN"]),
        (dict(interval=0), ["interval", ">= 1"]),
        (dict(interval=2.5), ["interval"]),
        (dict(interval=-1), ["interval = -1", "integer >= 0"]),
        (dict(lr_min=1e-2, lr_max=1e-3), ["lr_max"]),
        (dict(window=safestep.WINDOW_CAPACITY + 1), ["window", "257"]),
    ],
)
def test_bad_fields_raise_value_error_naming_them(kwargs, words):
    with pytest.raises(ValueError) as e:
        SchedulerConfig(**kwargs)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_immutable_replace_eq_hash_pickle():
    a = SchedulerConfig(mode="gradient")
    with pytest.raises(AttributeError):
        a.mode = "off"
    b = a.replace(cool=0.95)
    assert b.cool == 0.95 and b.mode == "gradient" and a.cool == 0.99
    assert a != b and a == SchedulerConfig(mode="gradient")
    assert hash(a) == hash(SchedulerConfig(mode="gradient"))
    assert hash(SchedulerConfig(beta=0.0)) == hash(SchedulerConfig(beta=-0.0))
    assert pickle.loads(pickle.dumps(b)) == b
    assert "mode='gradient'" in repr(a) and repr(a).startswith("SchedulerConfig(")
    with pytest.raises(AttributeError):
        a.no_such_field
    assert "cool" in dir(a) and "replace" in dir(a)
    a.validate()
    assert a.is_event(20) and not a.is_event(7)


def test_integers_are_accepted_for_floats():
    assert SchedulerConfig(beta=2).beta == 2.0
