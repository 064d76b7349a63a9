"""Selectors: top-k and k-means++ seeding (on scores or embeddings)."""
from .base import BaseSelector
from .kmeanspp import EmbeddingKMeansPPSelector, ScoreKMeansPPSelector
from .topk import TopKSelector

__all__ = ['BaseSelector', 'EmbeddingKMeansPPSelector', 'ScoreKMeansPPSelector',
           'TopKSelector']
