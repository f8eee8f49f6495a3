"""Small matplotlib PNGs for the curves of ``torchace.analysis`` (matplotlib imported lazily: the core
package does not need it; ``pip install torchace[analysis]``).  Files are written atomically, under the output
rule (torchace.atomic): an existing file is replaced only if it is a torchace plot, or with ``overwrite=True``."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..atomic import PLOT, check_output, png_metadata, write_output

__all__ = ["curve_panels", "bar_panels"]

Curve = Tuple[np.ndarray, np.ndarray]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str, dpi: int, overwrite: bool = False) -> str:
    write_output(path, PLOT, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", metadata=png_metadata()), ".png",
                 overwrite)
    return path


def curve_panels(path: str, panels: Dict[str, Dict[str, Curve]], *, xlabel: str, ylabel: str,
                 reference: Optional[Dict[str, Curve]] = None, ylim: Optional[Dict[str, Tuple[float, float]]] = None,
                 ncols: int = 3, title: str = "", dpi: int = 80, panel_size=(3.0, 2.4), zero_line: bool = True,
                 overwrite: bool = False) -> str:
    """One panel per key of ``panels``; each panel maps a curve label (e.g. "σ = 0.5 Å") to (x, y).
    ``reference``: a black dashed curve per panel (e.g. DFT).  ``ylim``: per-panel y limits.
    ``zero_line``: a thin line at y = 0 (off for absolute energies)."""
    check_output(path, PLOT, overwrite)  # before the figure
    plt = _plt()
    names = list(panels)
    ncols = max(1, min(ncols, len(names)))
    nrows = (len(names) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for label, (x, y) in panels[name].items():
            ax.plot(x, y, lw=1.2, label=label)
        if reference and name in reference:
            x, y = reference[name]
            ax.plot(x, y, "k--", lw=1.0, label="reference")
        if ylim and name in ylim:
            ax.set_ylim(*ylim[name])
        if zero_line:
            ax.axhline(0.0, color="0.6", lw=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    return _finish(plt, fig, path, dpi, title, overwrite)


def bar_panels(path: str, panels: Dict[str, Dict[str, float]], *, ylabel: str, dpi: int = 80,
               hline: Optional[Dict[str, float]] = None, title: str = "", overwrite: bool = False) -> str:
    """One bar chart per key of ``panels`` (label → value); ``hline``: a dashed line per panel (e.g. the
    full run length)."""
    check_output(path, PLOT, overwrite)  # before the figure
    plt = _plt()
    names = list(panels)
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 2.4), squeeze=False)
    for ax, name in zip(axes.flat, names):
        labels: Sequence[str] = list(panels[name])
        ax.bar(range(len(labels)), [panels[name][k] for k in labels], color="C0")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=7)
        if hline and name in hline:
            ax.axhline(hline[name], color="k", ls="--", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    return _finish(plt, fig, path, dpi, title, overwrite)


def _finish(plt, fig, path: str, dpi: int, title: str, overwrite: bool) -> str:
    """Title, layout, atomic PNG write, close: the common end of every panel figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = _save(fig, path, dpi, overwrite)
    plt.close(fig)
    return out
