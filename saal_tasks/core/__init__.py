"""Task-agnostic core: pool state, task contract, perturbations, the loop."""
from .errors import ResumeError, UserError
from .loop import ActiveLearningLoop, config_hash
from .perturbation import ASAMPerturbation, Perturbation, SAMPerturbation
from .pool_state import PoolState, PoolStateMismatchError
from .task import BaseTask

__all__ = ['ActiveLearningLoop', 'ResumeError', 'UserError', 'config_hash', 'ASAMPerturbation',
           'Perturbation', 'SAMPerturbation', 'PoolState', 'PoolStateMismatchError', 'BaseTask']
