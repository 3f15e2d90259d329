"""CSG on SDFs: closed forms of union/intersection/difference and the polynomial smooth union."""

import numpy as np
import pytest
import torch
from conftest import sphere_sdf

from vesselfield.csg import difference, intersection, smooth_union, union, union_all
from vesselfield.errors import VesselfieldError


def test_boolean_operations_on_two_spheres_classify_points_exactly():
    rng = np.random.default_rng(0)
    p = rng.uniform(-12, 12, size=(20000, 3))
    a, b = sphere_sdf(p, (0, 0, 0), 6.0), sphere_sdf(p, (5, 0, 0), 4.0)
    in_a, in_b = a < 0, b < 0
    assert np.array_equal(union(a, b) < 0, in_a | in_b)
    assert np.array_equal(intersection(a, b) < 0, in_a & in_b)
    assert np.array_equal(difference(a, b) < 0, in_a & ~in_b)
    # Outside both and far from the lens, union is the exact distance to the nearer sphere.
    far = np.array([[-20.0, 0, 0]])
    assert union(sphere_sdf(far, (0, 0, 0), 6), sphere_sdf(far, (5, 0, 0), 4))[0] == pytest.approx(14.0)


def test_smooth_union_is_min_far_from_the_junction_and_below_it_inside():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(-5, 5, 100000), rng.uniform(-5, 5, 100000)
    k = 1.5
    s, m = smooth_union(a, b, k), np.minimum(a, b)
    far = np.abs(a - b) >= k
    assert np.array_equal(s[far], m[far])
    near = ~far
    assert np.all(s[near] < m[near])
    # The gap is k h^2 / 4 with h = (k - |a - b|) / k: k/4 where a == b, and never more.
    assert (m - s).max() <= k / 4 + 1e-12
    assert smooth_union(np.array(2.0), np.array(2.0), k) == pytest.approx(2.0 - k / 4)


def test_smooth_union_equals_the_mix_form_of_the_polynomial_smooth_minimum():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=5000) * 3, rng.normal(size=5000) * 3
    for k in (0.1, 1.0, 4.0):
        g = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
        mix = b * (1 - g) + a * g - k * g * (1 - g)
        np.testing.assert_allclose(smooth_union(a, b, k), mix, atol=1e-12)


def test_smooth_union_k0_is_min_and_bad_k_is_an_error():
    a, b = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    assert np.array_equal(smooth_union(a, b, 0.0), np.minimum(a, b))
    for k in (-1.0, float("nan"), float("inf")):
        with pytest.raises(VesselfieldError, match="smoothing width"):
            smooth_union(a, b, k)
    with pytest.raises(VesselfieldError):
        union_all([])


def test_smooth_union_of_torch_tensors_keeps_gradients():
    a = torch.tensor([0.2, 3.0], requires_grad=True)
    b = torch.tensor([0.0, 0.0], requires_grad=True)
    s = smooth_union(a, b, 1.0)
    s.sum().backward()
    # Inside the blend both inputs get a share of the gradient (g and 1 - g); outside only the min.
    g = 0.5 + 0.5 * (0.0 - 0.2) / 1.0
    assert a.grad[0].item() == pytest.approx(g) and b.grad[0].item() == pytest.approx(1 - g)
    assert a.grad[1].item() == 0.0 and b.grad[1].item() == 1.0
    # Mixed NumPy/torch inputs give a tensor.
    assert isinstance(union(a.detach(), np.zeros(2)), torch.Tensor)


def test_union_all_folds_several_sdfs():
    p = np.stack(np.meshgrid(*[np.linspace(-10, 10, 21)] * 3, indexing="ij"), -1)
    spheres = [sphere_sdf(p, (x, 0, 0), 3.0) for x in (-5, 0, 5)]
    np.testing.assert_array_equal(union_all(spheres), np.minimum(np.minimum(spheres[0], spheres[1]), spheres[2]))
    blended = union_all(spheres, 2.0)
    assert np.all(blended <= union_all(spheres) + 1e-12)
