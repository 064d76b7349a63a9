"""The ground floor: contracts (task, scorer, selector, oracle, loop hook), pool state,
perturbations, errors and atomic I/O. It imports no plugin package and not the engine, so
``import saal_tasks.core`` is light."""
from .errors import ResumeError, UserError
from .hooks import ALHook
from .oracle import BaseOracle, QueryPending
from .perturbation import ASAMPerturbation, Perturbation, SAMPerturbation
from .pool_state import PoolState, PoolStateMismatchError
from .scorer import BaseScorer, ScoreResult
from .selection import BaseSelector, BaseUnitSelector, Selection, SelectionContext
from .task import BaseTask

__all__ = ['ResumeError', 'UserError', 'ALHook', 'BaseOracle', 'QueryPending',
           'ASAMPerturbation', 'Perturbation', 'SAMPerturbation', 'PoolState',
           'PoolStateMismatchError', 'BaseScorer', 'ScoreResult', 'BaseSelector',
           'BaseUnitSelector', 'Selection', 'SelectionContext', 'BaseTask']
