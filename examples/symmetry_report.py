"""Which symmetries does my data have? A symmetry report on your own data (here: simulated, saved as a CSV).

Charged particles in a uniform magnetic field B along z: inputs are the charge q (a scalar) and the velocity v (a
vector), the target is the Lorentz force F = q v x B plus a little noise. Rotations about z keep F equivariant;
reflections do not (v x B is a pseudovector: mirroring v does not mirror F), and neither does any rotation moving
the z axis. So among the candidates O(3), SO(3), O(2)@z, SO(2)@z, O(2)@x only SO(2)@z should hold, plus the
half-turn about z (its finite skeleton).

    python examples/symmetry_report.py            # ~10 s: writes magnetic.csv and symmetry_report.png (--out)

The same from the shell:

    softsym report --data magnetic.csv --group "O(3)" --rep-in "V0+V" --rep-out "V" \\
        --candidates "O(3);SO(3);O(2)@z;SO(2)@z;O(2)@x"
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from softsym import Trainer, TrainConfig, build_model, load_task
from softsym.groups.skeleton import skeleton_candidates
from softsym.report import format_increase, plot_symmetry_report, symmetry_report

CANDIDATES = ["O(3)", "SO(3)", "O(2)@z", "SO(2)@z", "O(2)@x"]


def simulate(n: int, seed: int = 0) -> np.ndarray:
    """Rows (q, v_x, v_y, v_z, F_x, F_y, F_z) with F = q v x (0, 0, B) + noise."""
    rng = np.random.default_rng(seed)
    q = rng.choice([-1.0, 1.0], size=(n, 1)) * rng.uniform(0.5, 2.0, size=(n, 1))
    v = rng.standard_normal((n, 3))
    force = q * np.cross(v, np.array([0.0, 0.0, 1.5]))
    return np.concatenate([q, v, force + 0.01 * rng.standard_normal((n, 3))], axis=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="samples (default 3000)")
    ap.add_argument("--epochs", type=int, default=300, help="probe epochs (default 300)")
    ap.add_argument("--out", type=Path, default=Path("."), help="directory for magnetic.csv and the report")
    args = ap.parse_args(argv)
    if args.n < 20 or args.epochs < 1:
        ap.error("--n must be at least 20 (15 % of it is the test split) and --epochs at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "magnetic.csv"
    np.savetxt(csv, simulate(args.n), delimiter=",", header="q,vx,vy,vz,Fx,Fy,Fz", comments="")

    task = load_task(csv, group="O(3)", rep_in="V0+V", rep_out="V", candidates=CANDIDATES)
    probe = build_model("mlp", task, ch=128)  # an unconstrained probe can test every candidate
    Trainer(probe, task, TrainConfig(epochs=args.epochs, lr=3e-3, batch_size=250, schedule="cosine",
                                     progress=False)).fit()
    tested = CANDIDATES + [s for s, _ in skeleton_candidates(CANDIDATES) if s not in CANDIDATES]
    report = symmetry_report(probe, task, tested)
    print(f"{task.name}: probe test MSE {report['base_mse']:.3g} on {report['n_samples']} held-out samples")
    for r in report["candidates"]:
        print(f"  {r['group']:<18} {r['verdict']:<10} loss {format_increase(r['loss_increase']):>10}   z {r['z']:6.2f}"
              + (f"   ({r['reason']})" if r.get("reason") else ""))
    png = plot_symmetry_report(report, args.out / "symmetry_report.png")
    print(f"plot: {png}")
    holds = {r["group"] for r in report["candidates"] if r["verdict"] == "holds"}
    untestable = [r["group"] for r in report["candidates"] if r["verdict"] == "untestable"]
    print("symmetries the data supports:", ", ".join(sorted(holds)) or "none"
          + (f" ({len(untestable)} candidates untestable, see above)" if untestable else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
