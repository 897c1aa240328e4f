"""Signs(n): the axis-flip group diag(+-1, ..., +-1), and the finite symmetry it captures in MixedInertia 'none'."""
import numpy as np
import pytest
import torch

import softsym
from softsym import Hom
from softsym.data.synthetic import _mixed_inertia_targets
from softsym.errors import GroupError


def test_signs_group_elements_and_parsing():
    g = softsym.group("Signs(3)")
    assert g.d == 3 and g.name == "Signs(3)" and g.order == 8
    mats = np.asarray(g.elements())
    assert mats.shape == (8, 3, 3)
    assert np.allclose(np.abs(mats), np.eye(3)[None])  # diagonal +-1 only
    diags = {tuple(np.diag(m).astype(int)) for m in mats}
    assert len(diags) == 8  # all sign patterns
    assert softsym.group("signs(2)") == softsym.Signs(2)


@pytest.mark.parametrize("spec, dim", [("Hom(V,V)", 3), ("V**2", 3), ("Hom(5V0+5V,V**2)", 15), ("V", 0),
                                       ("V**4", 21)])
def test_signs_basis_dimensions(spec, dim):
    # invariant tensors of the axis flips: index tuples in which every axis appears an even number of times
    # (V**4: 3 tuples iiii + 3 * 6 tuples with two distinct axes, each twice = 21)
    g = softsym.Signs(3)
    r = softsym.rep(spec, g) if not spec.startswith("Hom(") else softsym.rep(spec, g)
    assert softsym.equivariant_basis(r).dim == dim


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
def test_signs_bad_argument(bad):
    with pytest.raises(GroupError, match="Signs"):
        softsym.Signs(bad)


def test_mixed_inertia_none_keeps_exactly_the_axis_flips():
    """y = I diag(2, 0, 1): every axis flip is a symmetry of the data (to round-off); a rotation is not."""
    rng = np.random.default_rng(0)
    x = np.concatenate([np.log1p(np.exp(rng.standard_normal((64, 5)))), rng.standard_normal((64, 15))], 1)
    y = _mixed_inertia_targets(x, "none")
    gin = softsym.rep("5V0+5V", softsym.Signs(3))
    gout = softsym.rep("V**2", softsym.Signs(3))
    flips = softsym.Signs(3).sample(8, seed=0)
    for g in flips:
        xg = gin.rho(g).apply(torch.from_numpy(x)).numpy()
        yg = gout.rho(g).apply(torch.from_numpy(y)).numpy()
        assert np.abs(_mixed_inertia_targets(xg, "none") - yg).max() <= 1e-12 * np.abs(y).max()
    r = softsym.group("SO(3)").sample(1, seed=1)[0]
    rin, rout = softsym.rep("5V0+5V", softsym.group("SO(3)")), softsym.rep("V**2", softsym.group("SO(3)"))
    xr = rin.rho(r).apply(torch.from_numpy(x)).numpy()
    yr = rout.rho(r).apply(torch.from_numpy(y)).numpy()
    assert np.abs(_mixed_inertia_targets(xr, "none") - yr).max() > 1e-2 * np.abs(y).max()
