import math

import pytest

import safestep


def test_bounds_match_the_design_formulas():
    b = safestep.bounds(1.0, 32.0, 32)  # SNR_g = 1, SNR_v = 32/(1·32) = 1
    assert b.snr_g == 1.0 and b.snr_v == 1.0 and b.snr == pytest.approx(0.5)
    assert b.rho_g == pytest.approx(0.8) and b.rho_vol == pytest.approx(0.8)
    assert b.rho_combined == pytest.approx(1.6 / 3)
    d = b.to_dict()
    assert set(d) == {"rho_g", "rho_vol", "rho_combined", "snr_g", "snr_v", "snr"}


def test_edge_cases():
    b = safestep.bounds(math.inf, 0.0, 8, safety=0.5)
    assert (b.rho_g, b.rho_vol, b.rho_combined) == (1.0, 1.0, 1.0)
    z = safestep.bounds(0.0, 1.0, 8)
    assert z.rho_g == 0.0 and z.rho_combined == 0.0
    assert safestep.bounds(1.0, 1.0, 8, beta=0.0).snr_v == math.inf


@pytest.mark.parametrize(
    "args, kwargs, word",
    [
        ((float("nan"), 1.0, 8), {}, "snr_g"),
        ((-1.0, 1.0, 8), {}, "snr_g"),
        ((1.0, -1.0, 8), {}, "vol"),
        ((1.0, 1.0, 0), {}, "batch"),
        ((1.0, 1.0, 8), dict(safety=0.0), "safety"),
        ((1.0, 1.0, 8), dict(beta=-1.0), "beta"),
    ],
)
def test_bad_inputs_raise_value_error(args, kwargs, word):
    with pytest.raises(ValueError, match=word):
        safestep.bounds(*args, **kwargs)
