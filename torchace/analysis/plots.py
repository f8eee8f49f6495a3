"""Small matplotlib PNGs for the curves of ``torchace.analysis`` (matplotlib imported lazily: the core
package does not need it; ``pip install torchace[analysis]``).  Files are written atomically, under the output
rule (torchace.atomic): an existing file is replaced only if it is a torchace plot, or with ``overwrite=True``."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..atomic import PLOT, check_output, png_metadata, write_output

__all__ = ["curve_panels", "bar_panels", "parity_panels"]

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


# (points below, marker area, alpha) of a parity panel: many points get small translucent markers
MARKERS = ((200, 25, 0.85), (5000, 6, 0.5), (50000, 3, 0.35), (float("inf"), 1, 0.2))


def parity_panels(path: str, panels: Sequence[Tuple[str, str, float, str, Dict[str, Curve]]], *, title: str,
                  dpi: int = 150, overwrite: bool = False) -> str:
    """Parity plots, one panel per quantity: ``panels`` = (quantity, axis unit, error scale, error unit,
    {config_type: (reference, predicted)}), e.g. ("energy", "eV/atom", 1e3, "meV/atom", ...).  Each config_type
    gets its colour and its RMSE (error unit) in the legend; the panel title names ``title`` and the MAE and RMSE
    of all points; the identity line spans the data; many points stay visible (small, translucent markers, more
    translucent the more points there are)."""
    check_output(path, PLOT, overwrite)  # before the figure
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False)
    types = sorted({ct for *_, groups in panels for ct in groups})
    colour = {ct: f"C{k % 10}" for k, ct in enumerate(types)}  # one colour per config_type in every panel
    for ax, (quantity, unit, scale, err_unit, groups) in zip(axes.flat, panels):
        if not groups:
            ax.set_title(f"{title}: no {quantity} labels", fontsize=9)
            ax.axis("off")
            continue
        n = sum(len(x) for x, _ in groups.values())
        size, alpha = next((s, a) for limit, s, a in MARKERS if n < limit)
        # the largest config_type first: a small one is drawn on top of it, not hidden under it
        for ct, (x, y) in sorted(groups.items(), key=lambda kv: -len(kv[1][0])):
            err = (np.asarray(y) - np.asarray(x)) * scale
            ax.scatter(x, y, s=size, alpha=alpha, color=colour[ct], edgecolors="none", rasterized=len(x) > 2000,
                       label=f"{ct} ({len(x):,}): RMSE {np.sqrt(np.mean(err ** 2)):.3g}")
        ref = np.concatenate([np.asarray(x) for x, _ in groups.values()])
        pred = np.concatenate([np.asarray(y) for _, y in groups.values()])
        err = (pred - ref) * scale
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        pad = 0.03 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.8, zorder=0, label="y = x")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(f"{title}\n{quantity}: MAE {np.abs(err).mean():.3g}, RMSE {np.sqrt((err ** 2).mean()):.3g} "
                     f"{err_unit}", fontsize=9)
        ax.set_xlabel(f"reference {quantity} ({unit})")
        ax.set_ylabel(f"torchace {quantity} ({unit})")
        ax.grid(True, lw=0.3, alpha=0.5)
        ax.legend(fontsize=7, title=f"config_type (points): RMSE {err_unit}", title_fontsize=7, loc="upper left",
                  markerscale=max(1.0, 12 / size) ** 0.5, framealpha=0.8)
    return _finish(plt, fig, path, dpi, "", overwrite)


def _finish(plt, fig, path: str, dpi: int, title: str, overwrite: bool) -> str:
    """Title, layout, atomic PNG write, close: the common end of every panel figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = _save(fig, path, dpi, overwrite)
    plt.close(fig)
    return out
