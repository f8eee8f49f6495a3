"""Field names (batch, outputs), Voigt order and the package version: constants defined once."""
VERSION = "0.1.0"
POSITIONS = "positions"
SPECIES = "species"          # element index 0..NZ-1 (model order), not atomic number
NUMBERS = "numbers"          # atomic numbers
BATCH = "batch"              # structure index of each atom
CELL = "cell"                # [S, 3, 3], rows are lattice vectors
PBC = "pbc"                  # [S, 3] bool
EDGE_INDEX = "edge_index"    # [2, E]: row 0 centre i, row 1 neighbour j
UNIT_SHIFTS = "unit_shifts"  # [E, 3] integer lattice shifts: r_ij = x_j - x_i + S·cell
N_ATOMS = "n_atoms"          # [S]

ENERGY = "energy"
NODE_ENERGY = "node_energy"
FORCES = "forces"
VIRIAL = "virial"
STRESS = "stress"

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))  # xx, yy, zz, yz, xz, xy
VOIGT_ROWS = [a for a, _ in VOIGT]
VOIGT_COLS = [b for _, b in VOIGT]


def to_voigt(m):
    """[..., 3, 3] → [..., 6] in Voigt order xx, yy, zz, yz, xz, xy (the one Voigt helper)."""
    return m[..., VOIGT_ROWS, VOIGT_COLS]
