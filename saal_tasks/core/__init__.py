"""Task-agnostic core: pool state, task contract, perturbations, the loop."""
from .loop import ActiveLearningLoop, ResumeError, config_hash
from .perturbation import ASAMPerturbation, Perturbation, SAMPerturbation
from .pool_state import PoolState, PoolStateMismatchError
from .task import BaseTask

__all__ = ['ActiveLearningLoop', 'ResumeError', 'config_hash', 'ASAMPerturbation',
           'Perturbation', 'SAMPerturbation', 'PoolState', 'PoolStateMismatchError', 'BaseTask']
