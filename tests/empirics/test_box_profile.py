"""Blurred box profiles (empirics.box_profile): exact identities, recovery, and the ambiguity that
makes a sharp 1-2 px bar's height unmeasurable."""

from __future__ import annotations

import numpy as np
import pytest

from empirics.evaluator.box_profile import box_profile, step_response, thin_extent

CENTRES = np.arange(12) + 0.5


def test_step_response_is_the_pixel_box_for_a_zero_and_the_triangle_cdf_for_a_one():
    u = np.linspace(-2, 2, 401)
    assert np.allclose(step_response(u, 0.0), np.clip(u + 0.5, 0, 1), atol=1e-12, rtol=0)
    tri = np.where(u < -1, 0, np.where(u < 0, (u + 1) ** 2 / 2, np.where(u < 1, 1 - (1 - u) ** 2 / 2, 1)))
    assert np.allclose(step_response(u, 1.0), tri, atol=1e-12, rtol=0)


@pytest.mark.parametrize("a", [0.0, 0.3, 1.0, 1.7])
@pytest.mark.parametrize(("edge", "length"), [(4.0, 1.0), (4.37, 1.41), (3.9, 2.73), (5.5, 0.4)])
def test_box_profile_sums_to_its_length(a, edge, length):
    """Blur moves ink between pixels and keeps its total (the extent a profile's sum gives)."""
    assert abs(box_profile(CENTRES, edge, length, a).sum() - length) <= 1e-12


def _bar(edge_x, width, edge_y, height, a, strength=0.8):
    long = strength * height * box_profile(CENTRES, edge_x, width, a)
    thin = strength * width * box_profile(CENTRES, edge_y, height, a)
    return long, thin


@pytest.mark.parametrize("height", [1.05, 1.37, 1.8, 2.3])
def test_thin_extent_recovers_a_triangle_blurred_bar(height):
    """PIL's antialiased bilinear (a = 1): every 1-2 px bar's height is in its pixels."""
    long, thin = _bar(3.3, 3.1, 4.21, height, 1.0)
    m = thin_extent(long, thin)
    assert m.fits and m.identifiable
    assert abs(m.extent - height) <= 1e-4 and abs(m.kernel_width - 1.0) <= 1e-3


def test_sharp_two_row_bar_is_not_identifiable():
    """Area averaging (a = 0): a 1.2 px bar at offset 0.4 of full strength and a 2 px bar at offset 0
    of 0.6 strength are the same pixels, rows (0.6, 0.6) x width; no estimator can tell them apart."""
    long1, thin1 = _bar(3.3, 3.1, 4.4, 1.2, 0.0, strength=1.0)
    long2, thin2 = _bar(3.3, 3.1, 4.0, 2.0, 0.0, strength=0.6)
    assert np.allclose(thin1, thin2, atol=1e-12) and np.allclose(long1, long2, atol=1e-12)
    assert not thin_extent(long1, thin1).identifiable


def test_triangle_kernel_bar_at_a_pixel_boundary_is_not_identifiable():
    """PIL's bilinear (a = 1) has its own blind spot: a bar no thicker than a pixel, centred on a pixel
    boundary, shows two equal rows whatever its thickness (box(L) * triangle is zero at 1.5 px from the
    centre for every L <= 1), so a 1.0 px and a 0.4 px bar of the same ink are the same pixels."""
    long1, thin1 = _bar(3.3, 3.1, 5.5, 1.0, 1.0, strength=0.8)
    long2, thin2 = _bar(3.3, 3.1, 5.8, 0.4, 1.0, strength=2.0)
    assert np.allclose(thin1, thin2, atol=1e-12) and np.allclose(long1, long2, atol=1e-12)
    assert np.count_nonzero(thin1 > 1e-12) == 2
    assert not thin_extent(long1, thin1).identifiable


def test_sharp_three_row_bar_is_identifiable():
    """With a fully covered middle row the level, hence the height, is in the pixels."""
    long, thin = _bar(3.3, 3.1, 4.6, 1.7, 0.0)
    m = thin_extent(long, thin)
    assert m.identifiable and abs(m.extent - 1.7) <= 1e-4


@pytest.mark.parametrize(("long", "thin"), [([1.0, 2.0], [0.1, 1.0, 0.1]), ([0.0, 0.0, 0.0], [0.1, 1.0, 0.1]),
                                            ([0.2, 1.0, np.nan], [0.1, 1.0, 0.1]),
                                            ([[0.2, 1.0, 0.2]], [0.1, 1.0, 0.1])])
def test_bad_profiles_are_rejected(long, thin):
    with pytest.raises(ValueError, match="profile"):
        thin_extent(long, thin)


@pytest.mark.parametrize("a", [-0.1, 2.5, np.nan])
def test_bad_kernel_width_is_rejected(a):
    with pytest.raises(ValueError, match="kernel width"):
        step_response([0.0], a)
