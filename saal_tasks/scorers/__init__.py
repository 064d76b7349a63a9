"""Acquisition scorers and the engines behind the sharpness scorer."""
from .base import BaseScorer, ScoreResult, reduce_units
from .engines import BatchwiseEngine, PerturbedLossEngine, ReferenceEngine, VectorizedEngine
from .fast_engine import FastExactEngine
from .sharpness import RandomScorer, SharpnessScorer
from .uncertainty import (EntropyScorer, GradientNormScorer, LeastConfidenceScorer,
                          MarginScorer)

__all__ = ['BaseScorer', 'ScoreResult', 'reduce_units', 'BatchwiseEngine',
           'PerturbedLossEngine', 'ReferenceEngine', 'VectorizedEngine', 'RandomScorer',
           'SharpnessScorer', 'EntropyScorer', 'GradientNormScorer', 'LeastConfidenceScorer',
           'MarginScorer', 'FastExactEngine']
from .region import (PixelEntropyScorer, RandomPixelScorer, RegionImpurityScorer,
                     region_impurity, window_mean)

__all__ += ['PixelEntropyScorer', 'RandomPixelScorer', 'RegionImpurityScorer',
            'region_impurity', 'window_mean']
