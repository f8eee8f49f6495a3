"""Symmetric (coupled) basis B = C·AA with the sparse coupling matrix C (``coupling_coefficients``)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SymmetricCoupling(nn.Module):
    """B = C·AA with C sparse (COO buffers ``rows``, ``cols``, ``vals``)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_b: int, n_aa: int):
        super().__init__()
        self.register_buffer("rows", torch.from_numpy(rows))
        self.register_buffer("cols", torch.from_numpy(cols))
        self.register_buffer("vals", torch.from_numpy(vals))
        self.n_b = int(n_b)
        self.n_aa = int(n_aa)

    def forward(self, AA: torch.Tensor) -> torch.Tensor:
        shape = list(AA.shape[:-1]) + [self.n_b]
        out = torch.zeros(shape, dtype=AA.dtype, device=AA.device)
        return out.index_add_(-1, self.rows, AA.index_select(-1, self.cols) * self.vals)

    def transpose_apply(self, c: torch.Tensor) -> torch.Tensor:
        """c·C for c [..., n_b] → [..., n_aa]: coefficients of B expressed on AA."""
        shape = list(c.shape[:-1]) + [self.n_aa]
        out = torch.zeros(shape, dtype=c.dtype, device=c.device)
        return out.index_add_(-1, self.cols, c.index_select(-1, self.rows) * self.vals)
