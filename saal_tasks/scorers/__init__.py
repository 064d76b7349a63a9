"""Acquisition scorers and the engines behind the sharpness scorer; the VAAL and LL4AL
baselines (with their networks and LL4AL's training extension)."""
from ..core.scorer import BaseScorer, ScoreResult
from ..core.units import reduce_units
from .engines import BatchwiseEngine, PerturbedLossEngine, ReferenceEngine, VectorizedEngine
from .fast_engine import FastExactEngine
from .ll4al import (LossPredictionExtension, LossPredictionModule, LossPredictionScorer,
                    ranking_loss)
from .sharpness import RandomScorer, SharpnessScorer
from .uncertainty import (EntropyScorer, GradientNormScorer, LeastConfidenceScorer,
                          MarginScorer)
from .vaal import ConvVAE, Discriminator, MLPVAE, VAALScorer

__all__ = ['BaseScorer', 'ScoreResult', 'reduce_units', 'BatchwiseEngine',
           'PerturbedLossEngine', 'ReferenceEngine', 'VectorizedEngine', 'RandomScorer',
           'SharpnessScorer', 'EntropyScorer', 'GradientNormScorer', 'LeastConfidenceScorer',
           'MarginScorer', 'FastExactEngine', 'ConvVAE', 'Discriminator', 'MLPVAE',
           'VAALScorer', 'LossPredictionExtension', 'LossPredictionModule',
           'LossPredictionScorer', 'ranking_loss']
