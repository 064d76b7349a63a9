"""Baseline strategies that need more than a scorer or a selector: the pool view (what
Coreset, ProbCover, BADGE and VAAL see of the labeled pool), embeddings, LL4AL and VAAL."""
from .context import FixedPoolView, LoopPoolView, PoolAware, PoolView
from .embeddings import Embedding, FlatInputs, ModelFeatures, PrecomputedEmbedding
from .ll4al import (LossPredictionExtension, LossPredictionModule, LossPredictionScorer,
                    ranking_loss)
from .pool_hook import PoolViewHook
from .vaal import ConvVAE, Discriminator, MLPVAE, VAALScorer

__all__ = ['FixedPoolView', 'LoopPoolView', 'PoolAware', 'PoolView', 'PoolViewHook',
           'Embedding', 'FlatInputs', 'ModelFeatures', 'PrecomputedEmbedding',
           'LossPredictionExtension', 'LossPredictionModule', 'LossPredictionScorer',
           'ranking_loss', 'ConvVAE', 'Discriminator', 'MLPVAE', 'VAALScorer']
