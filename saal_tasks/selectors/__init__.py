"""Selectors: each turns a :class:`SelectionContext` into a :class:`Selection` — top-k,
k-means++ seeding (on scores or embeddings), BADGE, Coreset, ProbCover, and the region /
pixel selector; and the sample embeddings the diversity selectors use."""
from ..core.selection import (BaseSelector, BaseUnitSelector, Selection, SelectionContext,
                              SelectorContractError)
from .badge import BADGESelector
from .coreset import KCenterGreedySelector
from .embeddings import Embedding, FlatInputs, ModelFeatures, PrecomputedEmbedding
from .kmeanspp import EmbeddingKMeansPPSelector, ScoreKMeansPPSelector
from .probcover import ProbCoverSelector
from .region import RegionSelector
from .topk import TopKSelector

__all__ = ['BaseSelector', 'BaseUnitSelector', 'Selection', 'SelectionContext',
           'SelectorContractError', 'EmbeddingKMeansPPSelector', 'ScoreKMeansPPSelector',
           'TopKSelector', 'BADGESelector', 'KCenterGreedySelector', 'ProbCoverSelector',
           'RegionSelector', 'Embedding', 'FlatInputs', 'ModelFeatures',
           'PrecomputedEmbedding']
