"""Hypothesis strategies for the theory tests: special points mixed with ranges."""

from hypothesis import strategies as st

from theory import Discrete, ScaledBeta, Uniform


@st.composite
def bounds(draw):
    lo = draw(st.one_of(st.just(0.2), st.floats(0.01, 0.9)))
    width = draw(st.one_of(st.just(0.6), st.floats(0.05, 1.5)))
    return lo, lo + width


@st.composite
def zetas(draw):
    lo, hi = draw(bounds())
    kind = draw(st.sampled_from(["uniform", "beta", "discrete"]))
    if kind == "uniform":
        return Uniform(lo, hi)
    if kind == "beta":
        return ScaledBeta(draw(st.floats(1.0, 5.0)), draw(st.floats(1.0, 5.0)), lo, hi)
    k = draw(st.integers(2, 5))
    inner = draw(st.lists(st.floats(lo, hi), min_size=k - 2, max_size=k - 2))
    weights = draw(st.lists(st.floats(0.05, 1.0), min_size=k, max_size=k))
    total = sum(weights)
    probs = [w / total for w in weights]
    probs[-1] = 1.0 - sum(probs[:-1])
    return Discrete([lo, hi, *inner], probs)


times = st.one_of(st.sampled_from([1e-3, 0.2, 0.8, 3.0]), st.floats(1e-3, 4.0))
