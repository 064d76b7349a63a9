"""Acquisition scorers and the engines behind the sharpness scorer."""
from .base import BaseScorer, ScoreResult, reduce_units
from .engines import BatchwiseEngine, PerturbedLossEngine, ReferenceEngine, VectorizedEngine
from .sharpness import RandomScorer, SharpnessScorer

__all__ = ['BaseScorer', 'ScoreResult', 'reduce_units', 'BatchwiseEngine',
           'PerturbedLossEngine', 'ReferenceEngine', 'VectorizedEngine', 'RandomScorer',
           'SharpnessScorer']
