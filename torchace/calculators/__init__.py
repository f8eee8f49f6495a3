"""Calculators for MD engines: ``TorchACECalculator`` (ASE)."""
from .ase import PropertyNotImplementedError, TorchACECalculator

__all__ = ["TorchACECalculator", "PropertyNotImplementedError"]
