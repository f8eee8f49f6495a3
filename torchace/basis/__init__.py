"""Stage 2, the ACE basis (ACEpotentials.jl paper §II): one-particle spec and total-degree selection
(``spec``), radial embedding R_n (``radial``: Agnesi transform, envelope, orthonormal polynomials), real
spherical harmonics Y_lm (``angular``, e3nn conventions), the edge embedding and pooled atomic basis A
(``embedding``), the product basis AA (``product``), the coupling B = C·AA (``coupling``, with the
coefficients from ``coupling_coefficients``) and purification (``purification``)."""
from .coupling import SymmetricCoupling
from .embedding import EdgeEmbedding, pool
from .product import ProductBasis
from .radial import ManyBodyRadials, PairBasis

__all__ = ["EdgeEmbedding", "pool", "ProductBasis", "SymmetricCoupling", "ManyBodyRadials", "PairBasis"]
