import numpy as np
import pytest

from safestep import PowerIteration, top_eigenvalue


def diag(*d):
    d = np.array(d)
    return lambda x: d * np.asarray(x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_converges_to_the_top_eigenvalue_and_updates_v_in_place(dtype):
    p = PowerIteration(tol=1e-9, max_iters=200)
    v = np.ones(3, dtype=dtype)
    lam = p.estimate(v, diag(3.0, 1.0, 0.5))
    assert lam == pytest.approx(3.0, rel=1e-5)
    assert v.dtype == dtype and abs(v[0]) == pytest.approx(1.0, rel=1e-4)
    assert p.is_warm and p.eigenvalue == lam and p.iterations > 1
    # Warm: exactly one product per call.
    calls = []
    p.estimate(v, lambda x: (calls.append(1), 3.0 * np.asarray(x))[1])
    assert len(calls) == 1 and p.iterations == 1


def test_hvp_may_return_a_list_and_gets_a_numpy_array():
    seen = []

    def hvp(x):
        seen.append(type(x))
        return [2.0 * float(t) for t in x]

    p = PowerIteration()
    assert p.estimate(np.ones(2), hvp) == pytest.approx(2.0)
    assert seen[0] is np.ndarray


def test_preconditioned():
    # D^½ H D^½ with H = diag(2, 8), d = (2, 0.5): diag(8, 2) -> 8.
    p = PowerIteration(tol=1e-12, max_iters=500)
    lam = p.estimate(np.array([1.0, 1.0]), diag(2.0, 8.0), precond=np.array([2.0, 0.5]))
    assert lam == pytest.approx(8.0, rel=1e-6)


def test_python_exceptions_propagate_unchanged_and_state_is_kept():
    p = PowerIteration()
    v = np.ones(2)

    class Boom(Exception):
        pass

    def hvp(x):
        raise Boom("inside hvp")

    with pytest.raises(Boom, match="inside hvp"):
        p.estimate(v, hvp)
    assert not p.is_warm and np.all(np.isfinite(v))


@pytest.mark.parametrize(
    "hvp, words",
    [
        (lambda x: np.ones(3), ["hvp output", "length 3", "expected 2"]),
        (lambda x: np.array([np.nan, 0.0]), ["hvp output", "not finite"]),
        (lambda x: "not an array", ["hvp output"]),
    ],
)
def test_bad_products_raise(hvp, words):
    with pytest.raises((ValueError, TypeError)) as e:
        PowerIteration().estimate(np.ones(2), hvp)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_v_must_be_writable_float_and_contiguous():
    ro = np.ones(2)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        PowerIteration().estimate(ro, diag(1.0, 1.0))
    with pytest.raises(ValueError, match="C-contiguous"):
        PowerIteration().estimate(np.ones(4)[::2], diag(1.0, 1.0))
    with pytest.raises(ValueError, match="float32 or float64"):
        PowerIteration().estimate(np.ones(2, dtype=np.int32), diag(1.0, 1.0))
    with pytest.raises(ValueError, match="tol"):
        PowerIteration(tol=-1.0)
    with pytest.raises(ValueError, match="precond"):
        PowerIteration().estimate(np.ones(2), diag(1.0, 1.0), precond=np.array([1.0, 0.0]))


def test_state_dict_continues_bit_identically():
    h = diag(5.0, 4.0, 1.0)
    a, va = PowerIteration(), np.array([1.0, 0.5, 0.25])
    a.estimate(va, h)
    b, vb = PowerIteration(), va.copy()
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        assert a.estimate(va, h) == b.estimate(vb, h)
    assert np.array_equal(va, vb)


def test_top_eigenvalue_by_shift():
    mag, top = PowerIteration(tol=1e-10, max_iters=200), PowerIteration(tol=1e-10, max_iters=200)
    v, v_top = np.ones(2), np.ones(2)
    lam = top_eigenvalue(mag, top, v, v_top, diag(-5.0, 2.0))
    assert lam == pytest.approx(2.0, rel=1e-6)
    assert mag.eigenvalue == pytest.approx(-5.0, rel=1e-6)
    assert abs(v_top[1]) == pytest.approx(1.0, rel=1e-4)
