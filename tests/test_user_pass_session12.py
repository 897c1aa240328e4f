"""Session 12: fixes from the seventh round of user passes, and the leftovers of session 11."""
from __future__ import annotations

import math
import signal
import warnings

import numpy as np
import pytest
import torch

import softsym as ss


# ---------------------------------------------------------------- leftovers of session 11
def test_jvp_through_frame_average_of_a_degenerate_cloud():
    """torch.func.jvp through FrameAverage on a square (repeated covariance eigenvalues) raised a raw
    RuntimeError: the eigenvalue clustering called .numpy() on a functorch-wrapped tensor."""
    from torch.func import jvp

    from softsym.wrappers import FrameAverage

    class Base(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(12, 1, dtype=torch.float64)

        def forward(self, x):
            return self.lin(x.reshape(x.shape[0], -1))

    torch.manual_seed(0)
    fa = FrameAverage(Base(), group="O(3)", output="scalar")
    t = torch.arange(4, dtype=torch.float64) * math.pi / 2
    x = torch.stack([torch.cos(t), torch.sin(t), torch.zeros(4, dtype=torch.float64)], -1)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = fa(x)
        y2, dy = jvp(fa, (x,), (torch.randn_like(x),))
    assert torch.allclose(y, y2, atol=1e-12)
    assert dy.shape == y.shape and torch.isfinite(dy).all()


def test_interrupt_exit_status_names_the_signal():
    """The CLI exited 130 after SIGTERM too; shells report 128 + 15 = 143 for it."""
    from softsym import parallel
    from softsym.cli._common import _interrupt_status

    parallel.STOP_SIGNALS.clear()
    assert _interrupt_status() == 130  # a plain Ctrl-C
    parallel.note_stop_signal(signal.SIGTERM)
    parallel.note_stop_signal(signal.SIGINT)  # the first signal decides
    assert _interrupt_status() == 143
    assert parallel.STOP_SIGNALS == []


def test_run_app_maps_typers_interrupt_exit_to_the_signal():
    import typer

    from softsym import parallel
    from softsym.cli._common import run_app

    app = typer.Typer()

    @app.command()
    def stop():
        parallel.note_stop_signal(signal.SIGTERM)
        raise KeyboardInterrupt("stopped by SIGTERM")

    @app.command()
    def other():
        pass

    with pytest.raises(SystemExit) as exc:
        run_app(app, ["stop"])
    assert exc.value.code == 143
    with pytest.raises(SystemExit) as exc:
        run_app(app, ["other"])
    assert exc.value.code == 0


_NIL = np.zeros((1, 3, 3))
_NIL[0, 0, 1] = 1.0  # one nilpotent generator: not diagonalisable, so only the iterative path applies
_HEIS = np.zeros((3, 4, 4))
_HEIS[0, 0, 1] = _HEIS[1, 1, 2] = _HEIS[2, 0, 2] = 1.0


@pytest.mark.parametrize("alg, atoms", [(_NIL, (0, 0, 0, 0)), (_NIL, (0, 0, 1, 1)), (_HEIS, (0, 1, 0)),
                                        (_NIL, (0,) * 5)])
def test_iterative_path_matches_a_dense_null_space(alg, atoms):
    """The iterative (LOBPCG) path now probes each block with a short run before the long one and keeps the null
    vectors found when the block doubles; its basis must still be the whole null space, to round-off. V**5 has 96
    invariants: the block doubles from 16 to 128."""
    from softsym.reps import solve

    group = ss.Group(lie_algebra=alg)
    q = solve._path_iterative(group, atoms, 1e-6)[0]
    c = solve.dense_constraint(group, atoms)
    sv = np.linalg.svd(c, compute_uv=False)
    null = c.shape[1] - int((sv > 1e-8 * sv.max()).sum())
    assert q.shape == (alg.shape[1] ** len(atoms), null)
    assert solve.block_residual(group, atoms, q) < 1e-12
    assert np.allclose(q.T @ q, np.eye(null), atol=1e-10)


def test_block_counters_tell_solved_from_cached(fresh_cache):
    """`softsym demo` said "solved from scratch" when one cache entry of fourteen was missing; it now counts the
    blocks solved and the blocks read from the cache."""
    from softsym.reps import basis, cache

    rep = ss.rep("V**2", "O(3)")
    s0, c0 = basis.blocks_solved, basis.blocks_cached
    ss.equivariant_basis(rep)
    assert basis.blocks_solved > s0 and basis.blocks_cached == c0
    cache._memory.clear()
    s1 = basis.blocks_solved
    ss.equivariant_basis(rep)  # from disk
    assert basis.blocks_solved == s1 and basis.blocks_cached > c0


def test_nan_in_a_csv_names_its_line(tmp_path):
    """A NaN in a CSV was reported as "row 1, counting from 0" while every other CSV error names the file line."""
    from softsym.errors import DataError

    f = tmp_path / "d.csv"
    f.write_text("x1,x2,x3,y\n1,2,3,4\n\n1,nan,3,4\n")
    with pytest.raises(DataError, match=r"d\.csv, line 4: data row 2 has a NaN / inf entry \(column 2\)"):
        ss.load_task(f, group="O(3)", rep_in="V", rep_out="V0")


def test_prox_softemlp_in_a_plain_loop_warns_once():
    """SoftEMLP(penalty='prox') in a user's own loop (loss + regularization(), no proximal calls) ignored its
    strengths silently: the equivariance error at lambda = 1e6 equalled lambda = 0. It now warns once; the loss
    penalty in the same loop lowers the error as lambda grows."""
    from softsym.nn import SoftEMLP

    m = SoftEMLP("5V0+5V", "V**2", ["O(3)"], ch=16, penalty="prox")
    m.symmetry.set_strengths([100.0])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(6):
            m.regularization()
    assert sum("proximal_step" in str(w.message) for w in rec) == 1
    m2 = SoftEMLP("5V0+5V", "V**2", ["O(3)"], ch=16, penalty="prox")
    m2.symmetry.set_strengths([100.0])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(6):
            m2.regularization()
            m2.proximal_step(1e-3)
    assert not rec


def test_loss_penalty_in_a_plain_loop_lowers_the_error_with_strength():
    """PER's loss penalty in a user's own Adam loop on the Inertia task: the O(3) error falls with lambda."""
    from softsym.nn import SoftEMLP

    task = ss.make_task("inertia", n_train=64, n_val=16, n_test=16, seed=0)
    x, y = task.x_train.float(), task.y_train.float()
    y = y / y.std()
    errs = []
    for lam in (0.0, 1.0, 1e4):
        torch.manual_seed(0)
        m = SoftEMLP("5V0+5V", "V**2", ["O(3)"], ch=16, seed=0)
        m.symmetry.set_strengths([lam])
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        for _ in range(150):
            opt.zero_grad()
            ((m(x) - y).pow(2).mean() + m.regularization()).backward()
            opt.step()
        errs.append(ss.equivariance_error(m.double(), "O(3)", "5V0+5V", "V**2", task.x_test, n_samples=8).mean)
    assert errs[0] > 2 * errs[1] > 20 * errs[2]
