"""EMLP's cheap equivariant bilinear layer (Finzi et al. 2021, ``emlp.reps.bilinear_weights``).

y = 0.1 * W(x) x, where W(x) in Hom(rep_in, rep_out) is assembled from the input itself: every block of
Hom(rep_in, rep_out) of tensor type t (a pure tensor V^p (x) V*^q, up to axis order) is a learned linear
combination of n_t = min(#copies of t in x, dim t) fixed, randomly chosen copies of type t in x. Because those
copies transform exactly like the block, W(x) is an equivariant map of x and y is equivariant. Scalars in x
are not used (blocks of scalar type are zero), as in EMLP.

Differences from EMLP's code, none changing the function class or the parameter count:
the copies are drawn without replacement (EMLP draws with replacement, which can repeat a copy) from a seeded
numpy Generator; y is computed block pair by block pair without materialising the (batch, out, in) tensor W(x)
(each (out block A, in block B) pair either contracts x_B with the chosen copies first and then mixes with the
parameters, or mixes x_B with the parameters first, whichever is cheaper, with the parameter matmuls of all
pairs sharing A or B fused into one GEMM); and the layer works internally on (features, batch) tensors so that
every gather is a contiguous row gather.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..errors import RepError
from ..groups.base import Group
from ..reps.base import Rep
from ..reps.block import canonical_atoms
from ._util import (ExactBuffers, as_seed, bind_rep, check_real_group, factory_kwargs, first_order_backward,
                    use_plain_autograd)

__all__ = ["BiLinear", "bilinear_structure"]


def _runs(flat: np.ndarray) -> List[Tuple[int, int]]:
    """Maximal runs of consecutive integers in ``flat``: [(start, length), ...] in order."""
    if flat.size == 0:
        return []
    breaks = np.nonzero(np.diff(flat) != 1)[0] + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [flat.size]])
    return [(int(flat[a]), int(b - a)) for a, b in zip(starts, ends)]


def _axis_map(d: int, order) -> np.ndarray:
    """Flat index map of transposing a (d,)*r tensor: out[f] = flat index in the source of entry f."""
    r = len(order)
    if r == 0:
        return np.zeros(1, np.int64)
    return np.transpose(np.arange(d**r, dtype=np.int64).reshape((d,) * r), order).reshape(-1)


def bilinear_structure(rep_in: Rep, rep_out: Rep, seed: int = 0) -> dict:
    """Block pairs and chosen copies of the bilinear layer (numpy; also used to count parameters).

    Returns {"types": {type: (count, n_chosen)}, "pairs": [dict(a, b, type, n, cA, cB, sA, sB, gather)],
    "out_comps": [...], "in_comps": [...], "dim": total parameters}. ``type`` is the sorted tuple of canonical
    atoms (0 = V, 1 = V*); ``gather`` (n, sA*sB) holds, for each chosen copy, the positions in x of its entries
    laid out as the (A, B) block of Hom(rep_in, rep_out).
    """
    group = rep_in.group
    d = group.d
    rng = np.random.default_rng(seed)
    in_comps, out_comps = rep_in.components, rep_out.components
    copies: Dict[tuple, List[np.ndarray]] = {}
    for comp in in_comps:
        if not comp.atoms:
            continue
        catoms = canonical_atoms(group, comp.atoms)
        sigma = np.argsort(np.asarray(catoms), kind="stable")
        copies.setdefault(tuple(sorted(catoms)), []).append(comp.indices()[:, _axis_map(d, sigma)])
    chosen: Dict[tuple, np.ndarray] = {}
    types: Dict[tuple, Tuple[int, int]] = {}
    for key in sorted(copies, key=lambda k: (len(k), k)):
        allc = np.concatenate(copies[key], 0)
        n = min(allc.shape[0], d ** len(key))
        pick = np.sort(rng.choice(allc.shape[0], size=n, replace=False))
        chosen[key] = allc[pick]
        types[key] = (allc.shape[0], n)
    pairs, dim = [], 0
    for a, ca in enumerate(out_comps):
        for b, cb in enumerate(in_comps):
            dual_b = tuple(1 - t for t in cb.atoms)
            w = canonical_atoms(group, tuple(ca.atoms) + dual_b)
            key = tuple(sorted(w))
            if not w or key not in chosen:
                continue
            inv = np.argsort(np.argsort(np.asarray(w), kind="stable"))
            gather = chosen[key][:, _axis_map(d, inv)]
            n = gather.shape[0]
            pairs.append({"a": a, "b": b, "type": key, "n": n, "cA": ca.count, "cB": cb.count,
                          "sA": ca.block_size, "sB": cb.block_size, "gather": gather})
            dim += ca.count * cb.count * n
    return {"types": types, "pairs": pairs, "out_comps": out_comps, "in_comps": in_comps, "dim": dim}


#: A contraction over k terms into an output of m elements is accumulated with k in-place addcmul calls when k is
#: at most _LOOP_MAX and the broadcast temporary (k * m elements) would be at least _LOOP_MIN_TEMP elements (it no
#: longer fits in cache: the forward of the O(3), ch 384 hidden layer went from 5.1 to 2.8 ms); smaller ones use one
#: broadcast product and a sum (a loop of tiny ops would cost more in dispatch than it saves). Swept on the 2-core
#: Intel host (2026-12-03, one thread, training steps): (256, 2^14) beat (64, 2^18) by 4.5 % on the O(3) EMLP
#: ch 384, 3 % on SoftEMLP ch 128, 1.5-2 % on the O(5) and Lorentz EMLPs.
_LOOP_MAX = 256
_LOOP_MIN_TEMP = 1 << 14


def _use_loop(k: int, m: int) -> bool:
    return k <= _LOOP_MAX and k * m >= _LOOP_MIN_TEMP


def _acc_product_sum(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> None:
    """out += alpha * sum_k a[k] * b[k] (broadcasting a[k], b[k] to out), summing over the first axis of a and b."""
    k = a.shape[0]
    if _use_loop(k, out.numel()):
        for i in range(k):
            out.addcmul_(a[i], b[i], value=alpha)
    else:
        out.add_((a * b).sum(0), alpha=alpha)


class _BilinearFn(torch.autograd.Function):
    """out = [xT if add_input] + scale * W(x) x for a BiLinear plan, with a hand-written backward.

    One autograd node for the whole layer: the many small products and GEMMs write into preallocated buffers
    and accumulate gradients in place (views of one gradient buffer per input), which on CPU is several times
    faster than letting autograd record every view, product and reduction.
    """

    @staticmethod
    def forward(ctx, xT, w, layer, add_input):
        N = xT.shape[1]
        scale = layer.scale
        gidx = layer.gather_index
        G = xT.index_select(0, gidx) if gidx.numel() else None
        gp = G.split(layer._piece_sizes, 0) if G is not None else ()
        sp = xT.split(layer._in_split, 0) if layer._in_split is not None else ()

        def src(spec):
            return gp[spec[1]] if spec[0] == "g" else sp[spec[1]]

        out = xT.clone() if add_input else xT.new_zeros(layer.out_features, N)
        temps = {}

        def target(a):
            run = layer._out_single.get(a)
            if run is not None:
                return out.narrow(0, run[0], run[1])
            if a not in temps:
                temps[a] = xT.new_zeros(layer._out_rows[a], N)
            return temps[a]

        vs = []
        for off, rows, cB, sB, xbp, items in layer._b_groups:
            v = torch.mm(w[off:off + rows * cB].view(rows, cB), src(xbp).reshape(cB, sB * N))
            vs.append(v)
            for a, xp, n, cA, sA, r0 in items:
                m = n * sB
                vi = v[r0:r0 + cA * n].view(cA, m, N)  # y[c, s] += sum_k vi[c, k] X[s, k]
                _acc_product_sum(target(a).view(cA, sA, N), vi.transpose(0, 1).unsqueeze(2),
                                 src(xp).view(sA, m, N).transpose(0, 1).unsqueeze(1), scale)
        us = []
        for a, off, cA, K, sA, items in layer._a_groups:
            U = xT.new_empty(K, sA * N)
            for xp, xbp, n, cB, sB, k0 in items:
                u = U[k0:k0 + cB * n].view(cB, n, sA, N)
                X, xb = src(xp), src(xbp)
                if sB == 1:
                    torch.mul(X.view(1, n, sA, N), xb.view(cB, 1, 1, N), out=u)
                elif _use_loop(sB, u.numel()):  # u[c, j, s] = sum_b X[j, s, b] xb[c, b]
                    Xv, xv = X.view(n, sA, sB, N), xb.view(cB, sB, N)
                    torch.mul(Xv[None, :, :, 0], xv[:, None, None, 0], out=u)
                    for q in range(1, sB):
                        u.addcmul_(Xv[None, :, :, q], xv[:, None, None, q])
                else:
                    torch.sum(X.view(1, n, sA, sB, N) * xb.view(cB, 1, 1, sB, N), dim=3, out=u)
            target(a).view(cA, sA * N).addmm_(w[off:off + cA * K].view(cA, K), U, alpha=scale)
            us.append(U)
        for a, buf in temps.items():
            for start, pos, length in layer._out_runs_of[a]:
                out.narrow(0, start, length).add_(buf[pos:pos + length])
        ctx.layer, ctx.add_input, ctx.n_us, ctx.has_g = layer, add_input, len(us), G is not None
        ctx.save_for_backward(xT, w, *([G] if G is not None else []), *us, *vs)
        return out

    @staticmethod
    @first_order_backward("BiLinear")
    def backward(ctx, gout):
        layer = ctx.layer
        saved = ctx.saved_tensors
        xT, w = saved[0], saved[1]
        i = 2
        G = None
        if ctx.has_g:
            G, i = saved[2], 3
        us, vs = saved[i:i + ctx.n_us], saved[i + ctx.n_us:]
        N = xT.shape[1]
        gout = gout.contiguous()
        gsc = gout * layer.scale
        gx = gout.clone() if ctx.add_input else torch.zeros_like(xT)
        gG = torch.zeros_like(G) if G is not None else None
        gp = G.split(layer._piece_sizes, 0) if G is not None else ()
        sp = xT.split(layer._in_split, 0) if layer._in_split is not None else ()
        ggp = gG.split(layer._piece_sizes, 0) if gG is not None else ()
        gsp = gx.split(layer._in_split, 0) if layer._in_split is not None else ()

        def src(spec):
            return gp[spec[1]] if spec[0] == "g" else sp[spec[1]]

        def gsrc(spec):
            return ggp[spec[1]] if spec[0] == "g" else gsp[spec[1]]

        gcache = {}

        def grad_of(a):
            if a not in gcache:
                run = layer._out_single.get(a)
                if run is not None:
                    gcache[a] = gsc.narrow(0, run[0], run[1])
                else:
                    gcache[a] = torch.cat([gsc.narrow(0, start, length)
                                           for start, pos, length in layer._out_runs_of[a]], 0)
            return gcache[a]

        gw = torch.empty_like(w)
        for (a, off, cA, K, sA, items), U in zip(layer._a_groups, us):
            ga = grad_of(a).reshape(cA, sA * N)
            Wa = w[off:off + cA * K].view(cA, K)
            torch.mm(ga, U.t(), out=gw[off:off + cA * K].view(cA, K))
            gU = torch.mm(Wa.t(), ga)
            for xp, xbp, n, cB, sB, k0 in items:
                gu = gU[k0:k0 + cB * n]
                X, xb = src(xp), src(xbp)
                if sB == 1:
                    _acc_product_sum(gsrc(xp).view(n, sA, N), gu.view(cB, n, sA, N), xb.view(cB, 1, 1, N))
                    _acc_product_sum(gsrc(xbp).view(cB, N), gu.view(cB, n * sA, N).transpose(0, 1),
                                     X.view(n * sA, 1, N))
                else:
                    _acc_product_sum(gsrc(xp).view(n, sA, sB, N), gu.view(cB, n, sA, 1, N),
                                     xb.view(cB, 1, 1, sB, N))
                    _acc_product_sum(gsrc(xbp).view(cB, sB, N), gu.view(cB, n * sA, 1, N).transpose(0, 1),
                                     X.view(n * sA, 1, sB, N))
        for (off, rows, cB, sB, xbp, items), v in zip(layer._b_groups, vs):
            gV = torch.empty_like(v)
            for a, xp, n, cA, sA, r0 in items:
                m = n * sB
                gy = grad_of(a).reshape(cA, sA, 1, N)
                Xt = src(xp).view(1, sA, m, N)
                vi = v[r0:r0 + cA * n].view(cA, 1, m, N)
                gv = gV[r0:r0 + cA * n].view(cA, m, N)
                if _use_loop(sA, gv.numel()):  # gV[c, k] = sum_s gy[c, s] X[s, k]
                    gv.zero_()
                    _acc_product_sum(gv, gy.transpose(0, 1), Xt.transpose(0, 1))
                else:
                    torch.sum(gy * Xt, dim=1, out=gv)
                _acc_product_sum(gsrc(xp).view(sA, m, N), gy, vi)
            xb2 = src(xbp).reshape(cB, sB * N)
            torch.mm(gV, xb2.t(), out=gw[off:off + rows * cB].view(rows, cB))
            gsrc(xbp).view(cB, sB * N).addmm_(w[off:off + rows * cB].view(rows, cB).t(), gV)
        if gG is not None:
            gx.index_add_(0, layer.gather_index, gG)
        return gx, gw, None, None


class BiLinear(ExactBuffers):
    """EMLP's bilinear layer rep_in -> rep_out (both of one group): y = 0.1 W(x) x, equivariant.

    Parameters are N(0, 1) as in EMLP (one flat ``weight`` of EMLP's size, laid out per fused matmul);
    ``seed`` fixes which copies of x build W(x). ``forward(x)`` takes (..., in); ``forward_t(xT, add_input)``
    takes (in, N) and returns (out, N) = [xT +] 0.1 W(x) x.
    """

    def __init__(self, rep_in: Union[str, Rep], rep_out: Union[str, Rep], group: Optional[Union[str, Group]] = None, *,
                 seed: int = 0, scale: float = 0.1, dtype: Optional[torch.dtype] = None,
                 device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        fk = factory_kwargs(dtype, device)
        self.rep_in = bind_rep(rep_in, group, "rep_in")
        self.rep_out = bind_rep(rep_out, group if group is not None else self.rep_in.group, "rep_out")
        if self.rep_in.group != self.rep_out.group:
            raise RepError(f"BiLinear needs reps of one group, got {self.rep_in.group.name} and "
                           f"{self.rep_out.group.name}")
        self.group = check_real_group(self.rep_in.group)
        self.seed, self.scale = as_seed(seed), float(scale)
        self.in_features, self.out_features = self.rep_in.size, self.rep_out.size
        st = bilinear_structure(self.rep_in, self.rep_out, self.seed)
        self.types = st["types"]
        self.weight_dim = st["dim"]
        self._build(st, fk["device"])
        self.weight = nn.Parameter(torch.empty(self.weight_dim, **fk))
        self.reset_parameters()

    # ------------------------------------------------------------------ plan
    def _build(self, st, device) -> None:
        pairs = st["pairs"]
        pieces: List[np.ndarray] = []
        piece_of: Dict[bytes, int] = {}

        def piece(arr: np.ndarray) -> int:
            key = arr.tobytes() + str(arr.shape).encode()
            if key not in piece_of:
                piece_of[key] = len(pieces)
                pieces.append(arr.reshape(-1))
            return piece_of[key]

        # input blocks stored contiguously are pieces of one split of x (views); others join the one gather
        in_runs = sorted((start, length, b) for b, comp in enumerate(st["in_comps"])
                         for start, length in _runs(comp.indices().reshape(-1)))
        single = {b for b, comp in enumerate(st["in_comps"]) if len(_runs(comp.indices().reshape(-1))) == 1}
        self._in_split = [length for _, length, _ in in_runs] if len(in_runs) <= 64 else None
        split_of = {b: i for i, (_, _, b) in enumerate(in_runs)} if self._in_split is not None else {}
        xb_piece = {}
        for p in pairs:
            if p["b"] not in xb_piece:
                if p["b"] in single and p["b"] in split_of:
                    xb_piece[p["b"]] = ("s", split_of[p["b"]])
                else:
                    xb_piece[p["b"]] = ("g", piece(st["in_comps"][p["b"]].indices().reshape(-1)))
            n, cA, cB, sA, sB = p["n"], p["cA"], p["cB"], p["sA"], p["sB"]
            cost0 = n * cB * sA * sB + cA * n * cB * sA  # contract x_B with the copies, then mix (k, beta)
            cost1 = cA * n * cB * sB + cA * n * sA * sB  # mix x_B over beta, then contract with the copies
            p["mode"] = 0 if cost0 <= cost1 else 1
            if p["mode"] == 0:  # copies laid out (n, sA, sB)
                p["x_piece"] = ("g", piece(p["gather"]))
            else:  # copies laid out (sA, n, sB)
                p["x_piece"] = ("g", piece(p["gather"].reshape(n, sA, sB).transpose(1, 0, 2).copy()))
        # parameters: one slice per fused GEMM
        off = 0
        a_groups: List[tuple] = []  # (a, param offset, cA, K, sA, [(x_src, xb_src, n, cB, sB, row offset in U)])
        for a in range(len(st["out_comps"])):
            items = [p for p in pairs if p["a"] == a and p["mode"] == 0]
            if not items:
                continue
            cA, sA = items[0]["cA"], items[0]["sA"]
            rows, k0 = [], 0
            for p in items:
                rows.append((p["x_piece"], xb_piece[p["b"]], p["n"], p["cB"], p["sB"], k0))
                k0 += p["n"] * p["cB"]
            a_groups.append((a, off, cA, k0, sA, rows))
            off += cA * k0
        b_groups: List[tuple] = []  # (param offset, rows, cB, sB, xb_src, [(a, x_src, n, cA, sA, row offset)])
        for b in range(len(st["in_comps"])):
            items = [p for p in pairs if p["b"] == b and p["mode"] == 1]
            if not items:
                continue
            cB, sB = items[0]["cB"], items[0]["sB"]
            rows, r0 = [], 0
            for p in items:
                rows.append((p["a"], p["x_piece"], p["n"], p["cA"], p["sA"], r0))
                r0 += p["cA"] * p["n"]
            b_groups.append((off, r0, cB, sB, xb_piece[b], rows))
            off += r0 * cB
        assert off == self.weight_dim
        self._a_groups, self._b_groups = a_groups, b_groups
        self._piece_sizes = [len(pc) for pc in pieces]
        idx = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        self.register_index("gather_index", idx, device)
        # output blocks: a block stored in one contiguous run is accumulated in place in the output; others
        # (e.g. EMLP's scalars + gates) in a small buffer added to their runs at the end
        self._out_single: Dict[int, Tuple[int, int]] = {}
        self._out_runs_of: Dict[int, List[Tuple[int, int, int]]] = {}
        self._out_rows: Dict[int, int] = {}
        self._out_flat: Dict[int, np.ndarray] = {}
        for a, comp in enumerate(st["out_comps"]):
            flat = comp.indices().reshape(-1)
            self._out_flat[a] = flat
            runs, pos = [], 0
            for start, length in _runs(flat):
                runs.append((start, pos, length))
                pos += length
            self._out_rows[a] = flat.size
            if len(runs) == 1:
                self._out_single[a] = (runs[0][0], runs[0][2])
            else:
                self._out_runs_of[a] = runs

    def reset_parameters(self) -> None:
        """Draw the weights from N(0, 1), as EMLP does."""
        with torch.no_grad():
            self.weight.normal_()

    # ------------------------------------------------------------------ forward
    def forward_t(self, xT: torch.Tensor, add_input: bool = False) -> torch.Tensor:
        """(in, N) -> (out, N): scale * W(x) x, plus x itself when ``add_input`` (EMLP's residual; needs
        rep_in == rep_out)."""
        if add_input and self.in_features != self.out_features:
            raise RepError("add_input needs rep_in and rep_out of the same size")
        if self.weight_dim == 0:
            return xT.clone() if add_input else xT.new_zeros(self.out_features, xT.shape[1])
        if use_plain_autograd(xT) or use_plain_autograd(self.weight):
            return self._forward_plain(xT, bool(add_input))
        return _BilinearFn.apply(xT.contiguous(), self.weight, self, bool(add_input))

    def _forward_plain(self, xT: torch.Tensor, add_input: bool) -> torch.Tensor:
        """The same map with plain differentiable torch ops (einsum per block pair): slower than the custom kernel,
        but it supports forward-mode AD, torch.func transforms and double backward."""
        n_rows = xT.shape[1]
        w, gidx = self.weight, self.gather_index
        gp = xT.index_select(0, gidx).split(self._piece_sizes, 0) if gidx.numel() else ()
        sp = xT.split(self._in_split, 0) if self._in_split is not None else ()

        def src(spec):
            return gp[spec[1]] if spec[0] == "g" else sp[spec[1]]

        ys: Dict[int, torch.Tensor] = {}  # output component -> (copies, block size, N)

        def acc(a, val):
            ys[a] = val if a not in ys else ys[a] + val

        for a, off, cA, K, sA, items in self._a_groups:  # copies laid out (n, sA, sB)
            wa = w[off:off + cA * K].view(cA, K)
            for xp, xbp, n, cB, sB, k0 in items:
                acc(a, torch.einsum("cbj,jstn,btn->csn", wa[:, k0:k0 + cB * n].reshape(cA, cB, n),
                                    src(xp).reshape(n, sA, sB, n_rows), src(xbp).reshape(cB, sB, n_rows)))
        for off, rows, cB, sB, xbp, items in self._b_groups:  # copies laid out (sA, n, sB)
            wb = w[off:off + rows * cB].view(rows, cB)
            xb = src(xbp).reshape(cB, sB, n_rows)
            for a, xp, n, cA, sA, r0 in items:
                acc(a, torch.einsum("cjb,sjtn,btn->csn", wb[r0:r0 + cA * n].reshape(cA, n, cB),
                                    src(xp).reshape(sA, n, sB, n_rows), xb))
        out = xT if add_input else xT.new_zeros(self.out_features, n_rows)
        if not ys:
            return out.clone() if add_input else out
        idx = torch.cat([torch.as_tensor(self._out_flat[a], device=xT.device) for a in ys])
        vals = torch.cat([ys[a].reshape(-1, n_rows) for a in ys]) * self.scale
        return out.index_add(0, idx, vals)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out): scale * W(x) x."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise RepError(f"BiLinear expects last dimension {self.in_features}, got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        out = self.forward_t(x.reshape(-1, self.in_features).t())
        return out.t().reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        """Reps, group, parameter count and the chosen copies per block type, for ``repr(layer)``."""
        types = ", ".join(f"{'x'.join('V*' if t else 'V' for t in k)}: {n}/{c}" for k, (c, n) in self.types.items())
        return (f"{self.rep_in!r} -> {self.rep_out!r}, group={self.group.name}, params={self.weight_dim}, "
                f"chosen copies per type [{types}], seed={self.seed}")
