"""Oracles: the simulated one reveals ground truth."""
from .simulated import BaseOracle, SimulatedOracle

__all__ = ['BaseOracle', 'SimulatedOracle']
