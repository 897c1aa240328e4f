"""Wrappers: float64 exactness on generic inputs, documented behaviour on degenerate point clouds."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import softsym
from softsym.errors import ConfigError, DataError
from softsym.metrics import equivariance_error, lie_derivative_error
from softsym.wrappers import Canonicalize, DegenerateFrameWarning, FrameAverage, GroupAverage, SortCanonicalize

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(n_in, n_out, seed=0, hidden=32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                               torch.nn.Tanh(), torch.nn.Linear(hidden, n_out)).double()


class CloudMLP(torch.nn.Module):
    """An ordinary (non-equivariant) MLP on a flattened point cloud (B, n, C) -> (B, *out_shape)."""

    def __init__(self, n_points, channels, out_shape, seed=0):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = _mlp(n_points * channels, math.prod(self.out_shape), seed)

    def forward(self, pts):
        return self.net(pts.reshape(pts.shape[0], -1)).reshape(pts.shape[0], *self.out_shape)


def _transform(x, rot, shift, d, vector_channels, scalar_channels):
    """Apply x -> R x + t to positions and R v to vector channels of clouds (B, n, C)."""
    out = x.clone()
    out[..., :d] = torch.einsum("bij,bnj->bni", rot, x[..., :d]) + shift
    start = d + scalar_channels
    for k in range(vector_channels):
        sl = slice(start + k * d, start + (k + 1) * d)
        out[..., sl] = torch.einsum("bij,bnj->bni", rot, x[..., sl])
    return out


def _act_out(y, rot, shift, kind):
    if kind == "scalar":
        return y
    if kind == "vector":
        return torch.einsum("bij,b...j->b...i", rot, y)
    if kind == "position":
        return torch.einsum("bij,b...j->b...i", rot, y) + shift.reshape(shift.shape[0], *([1] * (y.ndim - 2)), -1)
    return rot[:, None] @ y @ rot.transpose(-1, -2)[:, None] if y.ndim == 4 else rot @ y @ rot.transpose(-1, -2)


def _frame_error(wrapper, x, group, kind, seed=0, translate=False):
    """max relative || f(g x) - g f(x) || over a batch with one random g per cloud."""
    b, d = x.shape[0], wrapper.d
    rot = softsym.group(group).sample(b, seed=seed)
    shift = torch.randn(b, 1, d, dtype=torch.float64) if translate else torch.zeros(b, 1, d, dtype=torch.float64)
    xg = _transform(x, rot, shift, d, wrapper.vector_channels, wrapper.scalar_channels)
    with torch.no_grad():
        y, yg = wrapper(x).double(), wrapper(xg).double()
    diff = (yg - _act_out(y, rot, shift, kind)).reshape(b, -1).norm(dim=1)
    return float((diff / y.reshape(b, -1).norm(dim=1).clamp_min(1e-300)).max())


def _clouds(b, n, channels, seed=0):
    return torch.randn(b, n, channels, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- group averaging
@pytest.mark.parametrize("group,rin,rout", [("S(5)", "V", "V"), ("S(5)", "V+V0", "V0"), ("D(6)", "3V", "V"),
                                            ("D(6)", "V+V**2", "V")])
def test_group_average_exact(group, rin, rout):
    g = softsym.group(group)
    n_in, n_out = softsym.rep(rin, g).size, softsym.rep(rout, g).size
    base = _mlp(n_in, n_out)
    wrapped = GroupAverage(base, group, rin, rout)
    assert wrapped.exact
    x = torch.randn(6, n_in, dtype=torch.float64)
    # the wrapper is exact element by element: 12 sampled elements suffice (D(6) is checked exhaustively)
    assert equivariance_error(wrapped, group, rin, rout, x, 12).max < TOL
    assert equivariance_error(base, group, rin, rout, x, 12).max > 1e-3  # negative control


@pytest.mark.parametrize("group,order", [("S(3)*S(2)", 12), ("D(6)@z", 12)])
def test_group_average_exact_for_products_and_embeddings_of_finite_groups(group, order):
    g = softsym.group(group)
    wrapped = GroupAverage(_mlp(g.d, g.d), group, "V", "V")
    assert wrapped.exact and wrapped.n_samples == order  # was a 16-sample Monte-Carlo average
    x = torch.randn(5, g.d, dtype=torch.float64)
    assert equivariance_error(wrapped, group, "V", "V", x).max < TOL


def test_group_average_monte_carlo_and_errors():
    base = _mlp(6, 3)
    ga = GroupAverage(base, "SO(3)", "2V", "V", n_samples=8, seed=0)
    x = torch.randn(4, 6, dtype=torch.float64)
    ga.eval()
    assert torch.equal(ga(x), ga(x))  # fixed samples in eval when seeded
    ga.train()
    assert not torch.equal(ga(x), ga(x))  # fresh samples in training
    err_few = equivariance_error(GroupAverage(base, "SO(3)", "2V", "V", 4, seed=0).eval(), "SO(3)", "2V", "V", x,
                                 8).mean
    err_many = equivariance_error(GroupAverage(base, "SO(3)", "2V", "V", 256, seed=0).eval(), "SO(3)", "2V", "V", x,
                                  8).mean
    assert err_many < err_few / 3  # Monte-Carlo error ~ 1/sqrt(n): 64x the samples, ~8x smaller
    with pytest.raises(ConfigError, match="not compact"):
        GroupAverage(_mlp(4, 4), "SO(1,3)", "V", "V")


def test_group_average_keeps_float64_elements_under_dtype_casts():
    # .float() / .half() convert the model, never the group elements: the actions stay float64 (D(6) has
    # irrational entries, float32 elements would leave a ~1e-9 error after casting back with .double())
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ga = GroupAverage(_mlp(2, 2), "D(6)", "V", "V").float().double()
    assert ga.elements.dtype == ga.inverses.dtype == torch.float64
    assert equivariance_error(ga, "D(6)", "V", "V", x).max < TOL
    mc = GroupAverage(_mlp(3, 3), "SO(3)", "V", "V", n_samples=4, seed=0).half()
    assert mc.elements.dtype == torch.float64 and mc.model[0].weight.dtype == torch.float16


def test_group_average_input_and_output_errors():
    ga = GroupAverage(_mlp(5, 5), "S(5)", "V", "V")
    x = torch.randn(3, 5, dtype=torch.float64)
    empty = ga(x[:0])
    assert empty.shape == (0, 5) and empty.dtype == torch.float64
    with pytest.raises(DataError, match="finite"):
        ga(torch.full((2, 5), float("nan"), dtype=torch.float64))
    with pytest.raises(DataError, match=r"\(batch, 5\)"):
        ga(x[0])
    with pytest.raises(softsym.ModelError, match="returned tuple"):
        GroupAverage(lambda v: (v,), "S(5)", "V", "V")(x)


# ---------------------------------------------------------------- frame averaging: generic inputs
@pytest.mark.parametrize("cls", [FrameAverage, Canonicalize])
@pytest.mark.parametrize("group", ["O(3)", "SO(3)", "E(3)", "SE(3)"])
@pytest.mark.parametrize("kind,shape", [("scalar", (2,)), ("vector", (3,)), ("position", (6, 3)),
                                        ("tensor", (3, 3))])
def test_frames_exact_on_generic_clouds(cls, group, kind, shape):
    n, d, s, v = 6, 3, 1, 1
    x = _clouds(8, n, d + s + v * d)
    base = CloudMLP(n, d + s + v * d, shape)
    wrapper = cls(base, group, scalar_channels=s, vector_channels=v, output=kind)
    rot_group = group.replace("SE", "SO").replace("E", "O")
    translate = group.startswith(("E", "SE"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFrameWarning)
        err = _frame_error(wrapper, x, rot_group, kind, translate=translate)
    assert err < TOL
    expected = (1 if cls is Canonicalize else (4 if group.startswith("S") else 8))
    assert wrapper.frame_size == expected and int(wrapper.last_frame_sizes.max()) == expected


def test_frame_negative_controls():
    n = 5
    x = _clouds(8, n, 3)
    base = CloudMLP(n, 3, (3,))
    assert _frame_error(FrameAverage(base, "O(3)", output="scalar"), x, "O(3)", "vector") > 1e-2  # base not equivariant
    so3 = FrameAverage(base, "SO(3)", output="vector")
    assert _frame_error(so3, x, "O(3)", "vector") > 1e-3  # an SO(3) frame does not give reflections
    o3 = FrameAverage(base, "O(3)", output="vector")
    assert _frame_error(o3, x, "O(3)", "vector", translate=True) > 1e-3  # O(3) is not translation-equivariant


def test_frame_average_flat_adapter_metrics_and_lie_derivative():
    """Frame averaging of a flat model of the Inertia layout: metrics (incl. jvp through eigh) see ~0 error."""
    base = _mlp(20, 9)

    def flat(x):  # (B, 20) = 5 masses, 5 positions -> clouds (B, 5, 4) = [position, mass]
        pts = torch.cat([x[:, 5:].reshape(-1, 5, 3), x[:, :5, None]], -1)
        return fa(pts).reshape(-1, 9)

    fa = FrameAverage(lambda p: base(torch.cat([p[..., 3], p[..., :3].reshape(p.shape[0], 15)], -1)), "O(3)",
                      scalar_channels=1, output="tensor")
    x = torch.randn(8, 20, dtype=torch.float64)
    assert equivariance_error(flat, "O(3)", "5V0+5V", "V**2", x, 8).max < TOL
    assert lie_derivative_error(flat, "SO(3)", "5V0+5V", "V**2", x).max < 1e-8
    assert equivariance_error(base, "O(3)", "5V0+5V", "V**2", x, 16).max > 1e-2


def test_frame_float32_model_and_input_errors():
    n = 4
    base = CloudMLP(n, 3, (3,)).float()
    fa = FrameAverage(base, "O(3)", output="vector")
    x = _clouds(4, n, 3)
    assert fa(x).dtype == torch.float32
    assert _frame_error(fa, x, "O(3)", "vector") < 1e-5
    with pytest.raises(DataError, match="n_points"):
        fa(torch.randn(4, 12, dtype=torch.float64))
    with pytest.raises(ConfigError):
        FrameAverage(base, "S(3)")
    with pytest.raises(ConfigError):
        FrameAverage(base, "O(3)", output="pseudovector")


@pytest.mark.parametrize("cls", [FrameAverage, Canonicalize])
def test_frame_non_finite_inputs_raise(cls):
    fa = cls(lambda p: p.sum(1), "E(2)", output="position")
    x = _clouds(3, 5, 2)
    assert torch.allclose(fa(x), x.mean(1), atol=1e-12)  # the centroid map is E(2)-equivariant already
    for bad in (float("nan"), float("inf")):
        x_bad = x.clone()
        x_bad[1, 2, 0] = bad
        with pytest.raises(DataError, match="finite"):  # was silently NaN for the whole batch
            fa(x_bad)


# ---------------------------------------------------------------- frame averaging: degenerate clouds
def _polygon(k, radius=1.3, d=2, center=(0.4, -0.2)):
    th = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    pts = torch.stack([torch.cos(th), torch.sin(th)], -1) * radius + torch.tensor(center, dtype=torch.float64)
    if d == 3:
        pts = torch.cat([pts, torch.zeros(k, 1, dtype=torch.float64)], -1)
    return pts[None].repeat(8, 1, 1)


def _degenerate_error(wrapper, x, group, kind="vector", translate=False):
    with pytest.warns(DegenerateFrameWarning, match="repeated covariance eigenvalues"):
        return _frame_error(wrapper, x, group, kind, translate=translate)


def test_regular_polygon_in_plane_dihedral_quadrature():
    """2-d degenerate eigenspace: dihedral grid, error decays exponentially with degenerate_samples."""
    x = _polygon(6)
    base = CloudMLP(6, 2, (2,))
    errs = [_degenerate_error(FrameAverage(base, "O(2)", output="vector", degenerate_samples=m), x, "O(2)")
            for m in (8, 32, 64)]
    assert errs[0] > 1e-3  # too coarse a grid is visibly approximate ...
    assert errs[2] < 1e-8  # ... a 64-element grid is near machine precision for this analytic model
    assert errs[2] < errs[1] < errs[0]


@pytest.mark.parametrize("group", ["O(3)", "SO(3)", "E(3)"])
def test_regular_polygon_in_3d(group):
    x = _polygon(5, d=3)
    base = CloudMLP(5, 3, (3,))
    rot = group.replace("E", "O")
    err = _degenerate_error(FrameAverage(base, group, output="vector"), x, rot, translate=group.startswith("E"))
    assert err < 1e-8


@pytest.mark.parametrize("group", ["O(3)", "SO(3)", "E(3)"])
def test_collinear_points_exact(group):
    """Collinear clouds: the model input does not depend on the angle in the degenerate plane -> exact."""
    t = torch.linspace(-1, 2, 5, dtype=torch.float64)
    direction = torch.tensor([0.3, -0.8, 0.5], dtype=torch.float64)
    x = (t[:, None] * direction + torch.tensor([0.2, 0.1, -0.4], dtype=torch.float64))[None].repeat(8, 1, 1)
    for kind, shape in (("vector", (3,)), ("tensor", (3, 3))):
        base = CloudMLP(5, 3, shape)
        fa = FrameAverage(base, group, output=kind)
        err = _degenerate_error(fa, x, group.replace("E", "O"), kind, translate=group.startswith("E"))
        assert err < TOL


def test_duplicated_points_exact_absolute():
    """All points duplicated at one location: under E(3) the only equivariant vector is 0; the output is 0."""
    x = torch.tensor([[0.3, 0.1, -0.5]], dtype=torch.float64).repeat(4, 1)[None].repeat(4, 1, 1)
    base = CloudMLP(4, 3, (3,))
    fa = FrameAverage(base, "E(3)", output="vector")
    with pytest.warns(DegenerateFrameWarning):
        y = fa(x)
    assert float(y.abs().max()) < 1e-12 * float(base(x - x.mean(1, keepdim=True)).abs().max() + 1)
    # duplicated points among otherwise generic ones are not degenerate: exact, no warning
    xg = _clouds(4, 6, 3)
    xg[:, 1] = xg[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFrameWarning)
        assert _frame_error(FrameAverage(CloudMLP(6, 3, (3,)), "E(3)", output="vector"), xg, "O(3)", "vector",
                            translate=True) < TOL


def test_isotropic_cloud_icosahedral_bound():
    """3-d degenerate eigenspace (cube vertices): icosahedral quadrature, documented ~1e-2 relative error."""
    cube = torch.tensor([[a, b, c] for a in (-1.0, 1.0) for b in (-1.0, 1.0) for c in (-1.0, 1.0)],
                        dtype=torch.float64)[None].repeat(8, 1, 1)
    base = CloudMLP(8, 3, (3,))
    err = _degenerate_error(FrameAverage(base, "O(3)", output="vector"), cube, "O(3)")
    assert err < 5e-2
    crude = FrameAverage(base, "O(3)", output="vector", degenerate_tol=0.0)  # no fallback: arbitrary eigenbasis
    assert _frame_error(crude, cube, "O(3)", "vector") > 10 * err


def test_canonicalize_ties_are_averaged_exactly():
    """A centrally symmetric cloud has zero third moments: both signs are kept, still exact."""
    half = _clouds(1, 4, 3, seed=5)[0]
    x = torch.cat([half, -half])[None].repeat(6, 1, 1) + 0.0
    base = CloudMLP(8, 3, (3,))
    can = Canonicalize(base, "O(3)", output="vector")
    err = _frame_error(can, x, "O(3)", "vector")
    assert err < TOL
    assert int(can.last_frame_sizes.min()) == 8  # all three signs tied -> 2^3 elements


# ---------------------------------------------------------------- sorting
def test_sort_canonicalize_invariant_and_equivariant():
    torch.manual_seed(0)
    x = torch.randn(6, 5, 2, dtype=torch.float64)
    inv = SortCanonicalize(lambda s: _mlp(10, 1)(s.reshape(s.shape[0], -1)), "invariant")
    eqv_base = _mlp(10, 5)
    eqv = SortCanonicalize(lambda s: eqv_base(s.reshape(s.shape[0], -1)), "equivariant")
    for _ in range(5):
        p = torch.randperm(5)
        assert torch.equal(inv(x[:, p]), inv(x))
        assert (eqv(x[:, p]) - eqv(x)[:, p]).abs().max() < TOL
    xf = torch.randn(8, 5, dtype=torch.float64)
    assert equivariance_error(SortCanonicalize(_mlp(5, 5), "equivariant"), "S(5)", "V", "V", xf).max < TOL
    assert equivariance_error(SortCanonicalize(_mlp(5, 1), "invariant"), "S(5)", "V", "V0", xf).max < TOL
    assert equivariance_error(_mlp(5, 5), "S(5)", "V", "V", xf).max > 1e-3


def test_sort_canonicalize_ties_exact():
    x = torch.randn(4, 5, dtype=torch.float64)
    x[:, 3] = x[:, 1]  # duplicated elements
    f = SortCanonicalize(_mlp(5, 5), "equivariant")
    assert equivariance_error(f, "S(5)", "V", "V", x).max < TOL
    y = f(x)
    assert torch.allclose(y[:, 3], y[:, 1], rtol=0, atol=1e-14)


def test_sort_canonicalize_negative_axis_empty_sets_and_errors():
    x = torch.randn(3, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = torch.tensor([3, 0, 4, 1, 2])
    per_element = lambda z: torch.tanh(z.cumsum(-2)).sum(-1)  # (B, n, 2) -> (B, n): fewer dims than the input
    neg, pos = SortCanonicalize(per_element, "equivariant", set_axis=-2), SortCanonicalize(per_element, "equivariant")
    assert torch.equal(neg(x), pos(x))  # set_axis=-2 counts from the input's end, not the output's
    assert torch.equal(neg(x[:, p]), neg(x)[:, p])
    assert neg(x[:0]).shape == (0, 5) and neg(x[:, :0]).shape == (3, 0)
    with pytest.raises(DataError, match="set_axis=5"):
        SortCanonicalize(per_element, "equivariant", set_axis=5)(x)
    with pytest.raises(DataError, match="batch axis"):
        SortCanonicalize(per_element, "equivariant", set_axis=-3)(x)
    with pytest.raises(softsym.ModelError, match="got tuple"):
        SortCanonicalize(lambda z: (z,), "equivariant")(x)


def test_frame_average_model_output_errors_are_model_errors():
    from softsym.errors import DataError, ModelError
    from softsym.wrappers import FrameAverage

    x = torch.randn(4, 6, 3, dtype=torch.float64)
    with pytest.raises(ModelError, match="must return a tensor"):
        FrameAverage(lambda p: (p.mean(1),), "O(3)", output="vector")(x)
    with pytest.raises(ModelError, match=r"returned shape \(32, 2\) for 32 canonical clouds"):
        FrameAverage(lambda p: p.mean(1)[:, :2], "O(3)", output="vector")(x)  # 4 clouds x 8 frames
    with pytest.raises(ModelError, match=r"returned shape \(32, 4\)"):
        FrameAverage(lambda p: p.mean(1).repeat(1, 2)[:, :4], "O(3)", output="tensor")(x)
    with pytest.raises(DataError, match="meta device"):
        FrameAverage(lambda p: p.mean(1), "O(3)", output="vector")(torch.zeros(2, 4, 3, device="meta"))
