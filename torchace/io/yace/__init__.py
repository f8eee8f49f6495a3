"""ML-PACE ``.yace`` files (pacemaker / LAMMPS ``pair_style pace``): ``read`` (a ``.yace`` as a ``PACEModel``),
``write`` (a fitted torchace model as a ``.yace``), its C-tilde functions (``ctilde``), the radial fit of the
export (``radial``), the nonlinear embedding lines (``nonlinear``), the pair-table declaration inside the export
(``pair``) and the LAMMPS ``pair_style table`` file of the pair part (``pair_table``)."""
from .read import read_yace
from .write import write_yace

__all__ = ["read_yace", "write_yace"]
