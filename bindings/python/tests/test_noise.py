import array
import pickle

import numpy as np
import pytest

from safestep import NoiseStats


def test_two_samples_one_parameter():
    n = NoiseStats.from_sample_grads(np.array([2.0]), np.array([[1.0], [3.0]]))
    assert (n.batch, n.mean_grad_sq, n.variance, n.noise) == (2, 4.0, 2.0, 1.0)
    assert n.unbiased_grad_sq == 3.0 == n.grad_sq and n.snr_g == 3.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sample_grads_match_the_sq_norm_form(dtype):
    rng = np.random.default_rng(0)
    g = rng.normal(0.3, 1.0, size=(16, 5)).astype(dtype)
    mean = g.mean(axis=0)
    a = NoiseStats.from_sample_grads(mean, g, population=100)
    m64, g64 = mean.astype(np.float64), g.astype(np.float64)
    want_s = ((g64 - m64) ** 2).sum() / 15
    assert a.batch == 16
    assert a.variance == pytest.approx(want_s, rel=1e-12)
    assert a.noise == pytest.approx(want_s / 16 * (100 - 16) / 100, rel=1e-12)
    b = NoiseStats.from_sample_sq_norms(float((m64**2).sum()), float((g64**2).sum()), 16, 100)
    # The sq-norm form assumes `mean` is the exact mean; a float32 mean is off by rounding.
    assert b.variance == pytest.approx(a.variance, rel=1e-9 if dtype == np.float64 else 1e-6)


def test_buffer_kinds_agree():
    g = np.array([[1.0, 0.0], [3.0, 2.0]])
    m = g.mean(axis=0)
    want = NoiseStats.from_sample_grads(m, g)
    assert NoiseStats.from_sample_grads(m, g.ravel()) == want  # 1-D B·P
    # bytes-like: array.array, a memoryview cast to a float format, a non-contiguous view.
    assert NoiseStats.from_sample_grads(array.array("d", m), array.array("d", g.ravel())) == want
    raw = memoryview(g.tobytes()).cast("d", (2, 2))
    assert NoiseStats.from_sample_grads(memoryview(m.tobytes()).cast("d"), raw) == want
    wide = np.zeros((2, 4))
    wide[:, ::2] = g
    assert NoiseStats.from_sample_grads(m, wide[:, ::2]) == want
    # Plain bytes carry no float type.
    with pytest.raises(ValueError, match="float32 or float64"):
        NoiseStats.from_sample_grads(m, g.tobytes())


def test_non_native_byte_order_is_rejected():
    g = np.array([[1.0], [3.0]])
    with pytest.raises(ValueError, match="native byte order"):
        NoiseStats.from_sample_grads(np.array([2.0]), g.astype(">f8" if np.little_endian else "<f8"))


@pytest.mark.parametrize(
    "mean, samples, words",
    [
        (np.zeros(3), np.zeros((4, 2)), ["sample_grads", "3"]),
        (np.zeros(3), np.zeros(7), ["sample_grads", "multiple"]),
        (np.zeros(0), np.zeros(4), ["mean_grad", "empty"]),
        (np.zeros(2), np.zeros((1, 2)), ["batch", ">= 2"]),
        (np.array([np.nan, 0.0]), np.zeros((3, 2)), ["mean_grad[0]", "not finite"]),
        (np.zeros(2), np.array([[0.0, 0.0], [0.0, np.inf]]), ["samples[3]", "not finite"]),
        (np.zeros(2, dtype=np.int64), np.zeros((3, 2)), ["mean_grad", "float32 or float64"]),
    ],
)
def test_bad_buffers_raise_value_error(mean, samples, words):
    with pytest.raises(ValueError) as e:
        NoiseStats.from_sample_grads(mean, samples)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_not_a_buffer_is_a_type_error():
    with pytest.raises(TypeError, match="buffer protocol"):
        NoiseStats.from_sample_grads(object(), np.zeros((2, 1)))


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: NoiseStats.from_variance(1.0, -1.0, 8), ["variance", "-1"]),
        (lambda: NoiseStats.from_variance(1.0, 1.0, 1), ["batch", "1"]),
        (lambda: NoiseStats.from_variance(1.0, 1.0, -4), ["batch", "-4"]),
        (lambda: NoiseStats.from_variance(1.0, 1.0, 8, 4), ["population", "4"]),
        (lambda: NoiseStats.from_sample_sq_norms(float("inf"), 1.0, 8), ["mean_grad_sq"]),
        (lambda: NoiseStats.from_sample_sq_norms(1.0, -2.0, 8), ["sum_sample_sq_norms"]),
    ],
)
def test_bad_scalars_raise_value_error(call, words):
    with pytest.raises(ValueError) as e:
        call()
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_finite_population_and_edge_cases():
    full = NoiseStats.from_variance(4.0, 2.0, 8, 8)  # N = B: no sampling noise
    assert (full.noise, full.unbiased_grad_sq, full.snr_g) == (0.0, 4.0, float("inf"))
    n = NoiseStats.from_variance(1.0, 16.0, 8)
    assert (n.unbiased_grad_sq, n.unbiased_grad_sq_unclamped, n.snr_g) == (0.0, -1.0, 0.0)


def test_dict_round_trip_and_pickle():
    n = NoiseStats.from_sample_sq_norms(0.25, 10.0, 16, 1000)
    assert NoiseStats.from_dict(n.to_dict()) == n
    assert pickle.loads(pickle.dumps(n)) == n
    assert repr(n).startswith("NoiseStats(batch=16")


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(noise=float("nan")), ["noise = NaN", "finite"]),
        (dict(variance=-5.0), ["variance", "-5.0", ">= 0"]),
        (dict(batch=1), ["batch = 1", ">= 2"]),
        (dict(unbiased_grad_sq=3.0), ["unbiased_grad_sq", "max(0, mean_grad_sq - noise)"]),
    ],
)
def test_from_dict_refuses_inconsistent_fields(change, words):
    fields = NoiseStats.from_sample_sq_norms(0.25, 10.0, 16, 1000).to_dict()
    fields.update(change)
    with pytest.raises(ValueError) as e:
        NoiseStats.from_dict(fields)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
