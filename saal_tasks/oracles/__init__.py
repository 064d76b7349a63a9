"""Oracles: the simulated one reveals ground truth; the file oracle asks people."""
from ..core.oracle import Answers, BaseOracle, QueryPending
from .file_oracle import FileOracle
from .simulated import SimulatedOracle

__all__ = ['Answers', 'BaseOracle', 'FileOracle', 'QueryPending', 'SimulatedOracle']
