"""SortCanonicalize(model, "S(n)", rep_in, rep_out): canonicalization of any S(n) rep by sorting point features."""
import warnings

import pytest
import torch

import softsym
from softsym.errors import ConfigError, DataError, ModelError
from softsym.metrics import equivariance_error
from softsym.wrappers import SortCanonicalize


def _net(n_in, n_out, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_in, 32), torch.nn.Tanh(), torch.nn.Linear(32, n_out)).double()


@pytest.mark.parametrize("n, rin, rout", [(5, "V", "V0"), (5, "V", "V"), (4, "V**2", "V"), (4, "2V+V**2", "V**2"),
                                          (5, "V0+V", "V+V0"), (3, "V**3", "V"), (4, "Hom(V, V)", "V0")])
def test_rep_form_is_exact_on_generic_inputs(n, rin, rout):
    g = softsym.group(f"S({n})")
    ni, no = softsym.rep(rin, g).size, softsym.rep(rout, g).size
    net = _net(ni, no)
    f = SortCanonicalize(net, f"S({n})", rin, rout)
    x = torch.randn(16, ni, dtype=torch.float64)
    assert equivariance_error(f, g, rin, rout, x, n_samples=24).max < 1e-14
    assert equivariance_error(net, g, rin, rout, x, n_samples=24).max > 0.05  # the wrapped net is not


def _tied_matrix():
    """A 3x3 matrix whose points 0 and 1 have equal row sums, column sums and diagonals but which is not symmetric
    under swapping them (M[0, 2] != M[1, 2])."""
    return torch.tensor([[0.5, 1.0, 2.0], [2.0, 0.5, 1.0], [1.0, 2.0, 3.0]], dtype=torch.float64).reshape(1, 9)


def test_ties_of_point_features_are_averaged_exactly():
    net = _net(9, 3)
    x = _tied_matrix()
    f = SortCanonicalize(net, "S(3)", "V**2", "V")
    assert equivariance_error(f, "S(3)", "V**2", "V", x).max < 1e-14
    cut = SortCanonicalize(net, "S(3)", "V**2", "V", max_tie_frames=1)
    with pytest.warns(UserWarning, match="orderings of points with identical features"):
        err = equivariance_error(cut, "S(3)", "V**2", "V", x).max
    assert err > 1e-6  # one ordering of the tie is not an equivariant frame


def test_rep_form_errors_and_float32():
    net = _net(5, 1).float()
    with pytest.raises(ConfigError, match="full symmetric group S"):
        SortCanonicalize(net, "Z(5)", "V", "V0")
    with pytest.raises(ConfigError, match="needs both reps"):
        SortCanonicalize(net, "S(5)", "V")
    with pytest.raises(ConfigError, match="'invariant' or 'equivariant'"):
        SortCanonicalize(net, "sideways")
    with pytest.raises(ConfigError, match="rep_in / rep_out go with a group"):
        SortCanonicalize(net, "invariant", "V", "V0")
    f = SortCanonicalize(net, "S(5)", "V", "V0")
    with pytest.raises(DataError, match=r"inputs must be \(batch, 5\)"):
        f(torch.randn(4, 6))
    with pytest.raises(DataError):
        f(torch.full((2, 5), float("nan")))
    x = torch.randn(8, 5)
    y = f(x)
    assert y.dtype == torch.float32 and y.shape == (8, 1)
    assert torch.allclose(y, f(x[:, torch.randperm(5)]), atol=1e-6)
    bad = SortCanonicalize(lambda v: v[:, :2], "S(5)", "V", "V")
    with pytest.raises(ModelError, match=r"must return \(batch, 5\)"):
        bad(torch.randn(3, 5, dtype=torch.float64))


@pytest.mark.parametrize("k", [5, 6])
def test_distance_matrices_of_regular_polygons_are_exact(k):
    """Tied row sums computed in another order used to differ in the last bit and sort differently for g x."""
    import math

    ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    pts = torch.stack([ang.cos(), ang.sin()], 1) * 1.37
    d = torch.cdist(pts, pts).reshape(1, -1)
    f = SortCanonicalize(_net(k * k, k), f"S({k})", "V**2", "V")
    assert equivariance_error(f, f"S({k})", "V**2", "V", d).max < 1e-14


def test_scalar_inputs_tie_every_point_and_empty_batches_pass():
    f = SortCanonicalize(_net(1, 4), "S(4)", "V0", "V")
    x = torch.randn(16, 1, dtype=torch.float64)
    assert equivariance_error(f, "S(4)", "V0", "V", x).max < 1e-14
    out = f(x)
    assert torch.allclose(out, out[:, :1].expand(-1, 4))  # the only equivariant V0 -> V maps are constant
    assert f(torch.ones(0, 1, dtype=torch.float64)).shape == (0, 4)


def test_input_follows_the_models_dtype_and_full_permutation_groups_are_accepted():
    from softsym.groups.finite import PermutationGroup

    f = SortCanonicalize(_net(5, 1), "S(5)", "V", "V0")  # a float64 net given float32 inputs
    assert f(torch.randn(3, 5)).dtype == torch.float64
    g = PermutationGroup([[1, 0, 2, 3], [1, 2, 3, 0]])  # generates all of S(4)
    h = SortCanonicalize(_net(4, 1), g, "V", "V0")
    assert equivariance_error(h, "S(4)", "V", "V0", torch.randn(8, 4, dtype=torch.float64)).max < 1e-14
    with pytest.raises(ConfigError, match="full symmetric group"):
        SortCanonicalize(_net(4, 1), PermutationGroup([[1, 2, 3, 0]]), "V", "V0")  # Z(4) only
    with pytest.raises(ConfigError, match=r"S\(n\) needs an integer n >= 1"):
        SortCanonicalize(_net(4, 1), "S(0)", "V", "V0")
