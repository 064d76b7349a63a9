"""Selectors: top-k and k-means++ seeding (on scores or embeddings)."""
from .badge import BADGESelector
from .base import BaseSelector
from .coreset import KCenterGreedySelector
from .kmeanspp import EmbeddingKMeansPPSelector, ScoreKMeansPPSelector
from .probcover import ProbCoverSelector
from .topk import TopKSelector

__all__ = ['BaseSelector', 'EmbeddingKMeansPPSelector', 'ScoreKMeansPPSelector',
           'TopKSelector', 'BADGESelector', 'KCenterGreedySelector', 'ProbCoverSelector']
from .region import RegionSelector

__all__ += ['RegionSelector']
