"""Memory of a nonlinear ACE model, estimated from its sizes before anything is allocated.

``ace_model(["Si"], 2, 6, densities=10**6, embedding="mlp")`` or an MLP of width 10**7 would allocate hundreds of
MB of parameters and then gigabytes per evaluated atom (the MLP gathers its [hidden, P] weights per atom); such
models are refused at construction with the numbers (``check_model_size``), and an evaluation whose per-atom
activations would not fit is refused before the forward pass (``check_evaluation``).  Both compare with
``torchace.resources.available_bytes``.
"""
from __future__ import annotations

from typing import Optional

from ...resources import check_fits

# copies of every parameter while training: the values, their gradient and two optimiser moments (Adam; L-BFGS
# keeps a comparable history)
TRAINING_COPIES = 4
# a model must be able to train on a structure of this many atoms to be built at all (a small training cell)
REFERENCE_ATOMS = 64
# float64 temporaries per (atom, density) and per (atom, hidden unit, density) in the evaluation and its graph:
# ρ, f, f' and their gradients; the MLP's gathered weights W[species], its pre-activation, tanh and gradient
PER_DENSITY = 6
PER_HIDDEN_DENSITY = 4


def parameter_count(nz: int, n_b: int, n_pair: int, densities: int, embedding: Optional[str], hidden: int,
                    radial_weights: int) -> int:
    """Trainable numbers: densities × elements × basis functions, the pair coefficients, the embedding's
    parameters (MLP: W, b, w per element) and the learnable radial weights."""
    emb = nz * hidden * (densities + 2) if embedding == "mlp" else (nz * densities if embedding == "fs" else 0)
    return densities * nz * n_b + nz * nz * n_pair + emb + radial_weights


def bytes_per_atom(n_b: int, densities: int, embedding: Optional[str], hidden: int) -> int:
    """float64 activations per evaluated atom that grow with the densities and the MLP width."""
    per = PER_DENSITY * densities + 2 * n_b
    if embedding == "mlp":
        per += PER_HIDDEN_DENSITY * hidden * densities + 4 * hidden
    return 8 * per


def check_model_size(nz: int, n_b: int, n_pair: int, densities: int, embedding: Optional[str], hidden: int,
                     radial_weights: int, device=None) -> None:
    """Refuse (``ResourceLimitError``) a model whose parameters while training plus the activations of a
    ``REFERENCE_ATOMS``-atom structure exceed the available memory; called before any parameter is allocated."""
    n_par = parameter_count(nz, n_b, n_pair, densities, embedding, hidden, radial_weights)
    per_atom = bytes_per_atom(n_b, densities, embedding, hidden)
    need = 8 * n_par * TRAINING_COPIES + per_atom * REFERENCE_ATOMS
    mlp = f", MLP width {hidden:,}" if embedding == "mlp" else ""
    check_fits(need, f"a nonlinear model of {densities:,} densities × {nz} element(s) × {n_b:,} basis functions"
               f"{mlp} ({n_par:,} parameters, {TRAINING_COPIES} copies while training, and "
               f"{per_atom / 2**20:.3g} MiB of activations per atom for a {REFERENCE_ATOMS}-atom structure)",
               "use fewer densities (1-8 are usual) or a narrower MLP (mlp_hidden 8-64)", device)


def check_evaluation(n_atoms: int, densities: int, embedding: Optional[str], hidden: int, device=None) -> None:
    """Refuse an evaluation of ``n_atoms`` atoms whose per-atom embedding activations would not fit (called by
    the embeddings, so every evaluation path has it; no cost below ``torchace.resources.SMALL_BYTES``)."""
    per_atom = bytes_per_atom(0, densities, embedding, hidden)
    check_fits(n_atoms * per_atom, f"evaluating {n_atoms:,} atoms with {densities:,} densities"
               + (f" and MLP width {hidden:,}" if embedding == "mlp" else "")
               + f" ({per_atom / 2**20:.3g} MiB of activations per atom)",
               "evaluate fewer atoms at a time (smaller batches), or use a smaller model", device)
