"""The selection contract: a selector reads a frozen :class:`SelectionContext` and returns a
:class:`Selection`.

The context holds everything a selector may need about the current acquisition: the scored
candidates and their scores (per sample, and per unit for partial annotation), the labeled
ids, the budget, the round's generator, the task and the model. Embeddings are computed
lazily, at most once per context, so pool-aware selectors (BADGE, Coreset, ProbCover,
k-means++ on embeddings) share them instead of each reaching into the loop.

The base class enforces the selection invariants in code (exactly the budget, unique ids,
inside the candidates), so every registered selector keeps them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from .task import BaseTask, batched_eval


@dataclass(frozen=True)
class SelectionContext:
    """What a selector sees of one acquisition.

    Attributes:
        candidate_ids: Scored sample ids, ``[N]`` (sorted, absolute ids).
        scores: One score per candidate, ``float64`` ``[N]``; higher = more informative.
        labeled_ids: Ids labeled before this query, ``[L]``.
        budget: Samples to query, ``1 <= budget <= N``; ``None`` for unit selectors, whose
            own per-sample budget decides.
        rng: Generator of the round's selection stream.
        task: The task adapter (batches, embeddings, labeled units).
        model: The model trained in this round (eval mode is set where it is used).
        unit_scores: Per candidate, a score map ``[*U]`` (partial annotation), else ``None``.
        embed_batch_size: Samples per forward pass for the lazily computed embeddings.
    """

    candidate_ids: np.ndarray
    scores: np.ndarray
    labeled_ids: np.ndarray
    budget: int | None
    rng: np.random.Generator
    task: BaseTask | None = None
    model: nn.Module | None = None
    unit_scores: Sequence[np.ndarray] | None = None
    embed_batch_size: int = 256
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of_scores(cls, scores: np.ndarray, budget: int | None,
                  rng: np.random.Generator | int = 0, **kwargs: Any) -> 'SelectionContext':
        """A context over candidates ``0..N-1`` (tests, offline use): positions are ids.

        Args:
            scores: ``[N]`` scores.
            budget: Samples to query.
            rng: Generator or seed.
            **kwargs: Other fields (``labeled_ids`` defaults to none labeled).
        """
        scores = np.asarray(scores, dtype=np.float64)
        kwargs.setdefault('candidate_ids', np.arange(len(scores), dtype=np.int64))
        kwargs.setdefault('labeled_ids', np.zeros(0, dtype=np.int64))
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return cls(scores=scores, budget=budget, rng=generator, **kwargs)

    def _computed(self, key: str, ids: np.ndarray,
                  fn: Callable[[nn.Module, Any], torch.Tensor]) -> np.ndarray:
        if key not in self._cache:
            if self.task is None or self.model is None:
                raise ValueError(f'this selection context has no task and model: {key} '
                                 'cannot be computed')
            self._cache[key] = batched_eval(self.task, self.model, ids,
                                            self.embed_batch_size, fn)
        return self._cache[key]

    def embeddings(self) -> np.ndarray:
        """``task.embed`` (penultimate features) of the candidates, ``float64`` ``[N, D]``."""
        return self._computed('embeddings', self.candidate_ids, self._task().embed)

    def labeled_embeddings(self) -> np.ndarray:
        """``task.embed`` of the labeled samples, ``float64`` ``[L, D]``."""
        return self._computed('labeled_embeddings', self.labeled_ids, self._task().embed)

    def gradient_embeddings(self) -> np.ndarray:
        """``task.gradient_embedding`` of the candidates (BADGE), ``float64`` ``[N, E]``."""
        return self._computed('gradient_embeddings', self.candidate_ids,
                              self._task().gradient_embedding)

    def labeled_units(self) -> list[np.ndarray]:
        """Per candidate, the bool mask ``[*U]`` of its units annotated before."""
        if 'labeled_units' not in self._cache:
            self._cache['labeled_units'] = self._task().labeled_units(self.candidate_ids)
        return self._cache['labeled_units']

    def _task(self) -> BaseTask:
        if self.task is None:
            raise ValueError('this selection context has no task')
        return self.task


@dataclass(frozen=True)
class Selection:
    """A query: the samples (and, for partial annotation, their units) to annotate.

    Attributes:
        sample_ids: Queried ids in pick order, ``int64`` ``[K]``.
        scores: The candidates' scores of the queried ids, ``[K]``.
        units: Per queried sample, sorted flat indices of the units to annotate
            (partial annotation), else ``None``.
    """

    sample_ids: np.ndarray
    scores: np.ndarray
    units: list[np.ndarray] | None = None

    def record(self) -> dict[str, Any]:
        """What ``selected.json`` keeps besides the ids: the scores, or the units."""
        if self.units is None:
            return {'scores': np.asarray(self.scores, dtype=np.float64).tolist()}
        return {'num_units': int(sum(len(u) for u in self.units)),
                'units': [np.asarray(u, dtype=np.int64).tolist() for u in self.units]}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> 'Selection':
        """The selection stored by :meth:`record` (with ``sample_ids``) in ``selected.json``."""
        units = data.get('units')
        return cls(sample_ids=np.asarray(data['sample_ids'], dtype=np.int64),
                   scores=np.asarray(data.get('scores', []), dtype=np.float64),
                   units=None if units is None else [np.asarray(u, dtype=np.int64)
                                                     for u in units])


class SelectorContractError(RuntimeError):
    """A selector broke the selection invariants (a bug in that selector)."""


class BaseSelector:
    """Chooses a query from a :class:`SelectionContext`.

    Subclasses implement :meth:`_select` (positions into the candidates); :meth:`select`
    checks the input and enforces the invariants: exactly ``budget`` unique positions.

    Attributes:
        selects_units: ``True`` for selectors that pick units inside samples (partial
            annotation); the loop pairs them with tasks that annotate units.
    """

    selects_units: ClassVar[bool] = False

    def select(self, context: SelectionContext) -> Selection:
        """Pick the query.

        Args:
            context: The acquisition; ``context.budget`` candidates are returned.

        Returns:
            The selection, ids in pick order.

        Raises:
            ValueError: The scores are not 1-D and finite, or the budget does not fit.
            SelectorContractError: The selector returned something other than ``budget``
                unique positions among the candidates.
        """
        scores = np.asarray(context.scores, dtype=np.float64)
        budget = context.budget
        if scores.ndim != 1 or len(scores) != len(context.candidate_ids):
            raise ValueError(f'scores must be 1-D with one per candidate, got shape '
                             f'{scores.shape} for {len(context.candidate_ids)} candidates')
        if budget is None or not 1 <= budget <= len(scores):
            raise ValueError(f'budget {budget} must be between 1 and the number of scored '
                             f'candidates ({len(scores)}): lower the budget or score more')
        if not np.isfinite(scores).all():
            raise ValueError('scores contain NaN or inf: the model diverged; check the '
                             'learning rate or the perturbation radius rho')
        picked = np.asarray(self._select(context), dtype=np.int64)
        if (picked.ndim != 1 or len(picked) != budget or len(np.unique(picked)) != budget
                or picked.min(initial=0) < 0 or picked.max(initial=0) >= len(scores)):
            raise SelectorContractError(
                f'{type(self).__name__} returned {picked.tolist()[:10]} for a budget of '
                f'{budget} among {len(scores)} candidates: a selector must return exactly '
                'budget unique positions')
        return Selection(sample_ids=np.asarray(context.candidate_ids)[picked],
                         scores=scores[picked])

    def _select(self, context: SelectionContext) -> np.ndarray:
        """Positions into ``context.candidate_ids``, ``[budget]``, in pick order."""
        raise NotImplementedError


class BaseUnitSelector(BaseSelector):
    """Chooses units *inside* samples (pixels of an image) instead of whole samples.

    Used when annotation is partial: every scored sample may receive a few more annotated
    units per round (segmentation's region- and pixel-based annotation). Subclasses implement
    :meth:`select_units`; :meth:`select` feeds it the context's unit score maps and the
    masks of units annotated before, and keeps the samples that received units.
    """

    selects_units: ClassVar[bool] = True
    #: Whether the units chosen in a candidate depend only on its own score map and labeled
    #: mask (not on the other candidates). The loop then scores and selects a chunk of
    #: candidates at a time and keeps only the chosen units, not every score map.
    per_sample: ClassVar[bool] = False

    def select(self, context: SelectionContext) -> Selection:
        if context.unit_scores is None:
            raise ValueError(f'{type(self).__name__} needs a score per unit, but the scorer '
                             'gives one per sample: choose a pixel scorer')
        labeled = context.labeled_units()
        units = self.select_units(list(context.unit_scores), labeled, context.rng)
        for k, u in enumerate(units):
            u = np.asarray(u, dtype=np.int64)
            if len(np.unique(u)) != len(u) or (len(u) and labeled[k].reshape(-1)[u].any()):
                raise SelectorContractError(
                    f'{type(self).__name__} chose repeated or already labeled units in '
                    f'candidate {int(context.candidate_ids[k])}')
        keep = [k for k, u in enumerate(units) if len(u)]
        return Selection(sample_ids=np.asarray(context.candidate_ids)[keep],
                         scores=np.asarray(context.scores, dtype=np.float64)[keep],
                         units=[np.asarray(units[k], dtype=np.int64) for k in keep])

    def select_units(self, unit_scores: list[np.ndarray], labeled: list[np.ndarray],
                     rng: np.random.Generator) -> list[np.ndarray]:
        """Pick units to annotate in each candidate.

        Args:
            unit_scores: Per candidate, a score map ``[*U]`` (e.g. ``[H, W]``), higher = more
                informative; finite.
            labeled: Per candidate, a bool mask ``[*U]`` of units annotated before.
            rng: Generator for selectors that sample.

        Returns:
            Per candidate, sorted unique flat indices (``int64``) of units to annotate now,
            none of them already labeled; an array may be empty.
        """
        raise NotImplementedError
