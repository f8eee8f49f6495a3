"""Product basis AA_{i,k} = Π_t A_{i, a_{k,t}} over sorted multisets a_k of A-indices (ACE, Drautz 2019)."""
from __future__ import annotations

from typing import List

import numpy as np
import torch
from torch import nn


class ProductBasis(nn.Module):
    """AA[i, k] = Π_t A[i, idx[k, t]]; rows of lower order are padded with a column of ones."""

    def __init__(self, aa: List[np.ndarray], n_a: int):
        super().__init__()
        order = max(x.shape[1] for x in aa) if aa else 1
        blocks = []
        for x in aa:
            pad = np.full((x.shape[0], order - x.shape[1]), n_a, dtype=np.int64)
            blocks.append(np.concatenate([x, pad], axis=1))
        idx = np.concatenate(blocks) if blocks else np.zeros((0, order), np.int64)
        self.register_buffer("idx", torch.from_numpy(idx))
        self.n_a = int(n_a)

    @property
    def n_aa(self) -> int:
        return int(self.idx.shape[0])

    def forward(self, A: torch.Tensor) -> torch.Tensor:
        A1 = torch.cat([A, torch.ones_like(A.narrow(-1, 0, 1))], dim=-1)
        # explicit product over the (few) correlation positions: cheaper than prod() under autograd/jvp
        out = A1.index_select(-1, self.idx[:, 0])
        for t in range(1, self.idx.shape[1]):
            out = out * A1.index_select(-1, self.idx[:, t])
        return out


    def grad(self, A: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """∂(Σ_k c[..., k] AA[..., k])/∂A [..., n_a] from the leave-one-out products (no autograd)."""
        loo = self.leave_one_out(A) * c.unsqueeze(-2)  # [..., ν, n_AA]
        shape = list(A.shape[:-1]) + [self.n_a + 1]
        out = torch.zeros(shape, dtype=A.dtype, device=A.device)
        for t in range(self.idx.shape[1]):
            out.index_add_(-1, self.idx[:, t], loo.select(-2, t))
        return out.narrow(-1, 0, self.n_a)

    def leave_one_out(self, A: torch.Tensor) -> torch.Tensor:
        """L[..., t, k] = Π_{s≠t} A[..., idx[k, s]] ([..., ν, n_AA]), so that dAA_k = Σ_t L[t, k]·dA[idx[k, t]]."""
        A1 = torch.cat([A, torch.ones_like(A.narrow(-1, 0, 1))], dim=-1)
        nu = self.idx.shape[1]
        f = [A1.index_select(-1, self.idx[:, t]) for t in range(nu)]
        # prefix/suffix products: no division, exact when factors vanish
        pre = [torch.ones_like(f[0])]
        for t in range(nu - 1):
            pre.append(pre[-1] * f[t])
        out = [pre[nu - 1]]
        suf = torch.ones_like(f[0])
        for t in range(nu - 1, 0, -1):
            suf = suf * f[t]
            out.append(pre[t - 1] * suf)
        out.reverse()
        return torch.stack(out, dim=-2)

    def tangent(self, loo: torch.Tensor, dA: torch.Tensor) -> torch.Tensor:
        """dAA [..., n_AA] from leave-one-out products ``loo`` [..., ν, n_AA] and a tangent dA [..., n_a]."""
        dA1 = torch.cat([dA, torch.zeros_like(dA.narrow(-1, 0, 1))], dim=-1)
        out = loo.select(-2, 0) * dA1.index_select(-1, self.idx[:, 0])
        for t in range(1, self.idx.shape[1]):
            out = out + loo.select(-2, t) * dA1.index_select(-1, self.idx[:, t])
        return out
