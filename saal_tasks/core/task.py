"""The contract between the task-agnostic core and a task adapter.

The loop, scorers, selectors and oracles only ever talk to a task through this class, which is
what lets one SAAL implementation serve classification (one unit per image), detection (one
unit per pseudo-box) and segmentation (one unit per pixel).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .errors import ConfigError
from .image_files import key_path


class AnnotationCodec:
    """How a task checks and persists annotations (defaults: accept everything, store as is)."""

    def validate_annotations(self, annotations: dict[int, Any]) -> None:
        """Check oracle answers before anything is persisted; raise ``AnnotationError``.

        The default accepts everything; tasks check what they can (class range, box
        coordinates, mask size) so that a bad answer never reaches the state.
        """

    def encode_annotation(self, annotation: Any) -> Any:
        """Turn one annotation into a JSON-serialisable value (for the persisted state)."""
        return annotation

    def decode_annotation(self, value: Any) -> Any:
        """Inverse of :meth:`encode_annotation`."""
        return value


class AnnotationFiles:
    """Human labels through files: export a query, read people's answers (``FileOracle``).

    The defaults refuse with one line, so a task without files works with the simulated
    oracle only.
    """

    def export_query(self, sample_ids: np.ndarray, folder: Path,
                     predictions: dict[int, Any] | None = None, **options: Any) -> Any:
        """Write the queried samples into ``folder`` in a format people can label.

        Tasks with partial annotation also take ``units`` (per sample, the flat indices of
        the units to label); every task takes ``predictions`` (the model's answers from
        :meth:`QueryData.predict_annotations`, written as pre-annotations where the format
        has room for them); extra keyword options come from ``FileOracle(export_options=)``.
        A returned dict is added to the query's ``query.json``.
        """
        raise ConfigError(f'{type(self).__name__} cannot export queries for people yet: use '
                          "oracle = dict(type='SimulatedOracle')")

    def read_answers(self, path: Path) -> Any:
        """Parse people's answers to an exported query (id -> annotation, or pairs)."""
        raise ConfigError(f'{type(self).__name__} cannot read answer files yet: use '
                          "oracle = dict(type='SimulatedOracle')")


class QueryData:
    """Query mode: the task on data nobody has labeled, and what a query shows of the model.

    The defaults refuse ``--data`` with one line, name no files and predict nothing.
    """

    @classmethod
    def query_config(cls, task_cfg: dict, data: str) -> dict:
        """A copy of ``task_cfg`` whose pool is the unlabeled data at ``data``.

        Consumed at the edge (``tools/query.py --data``): the result builds this task with
        the pool replaced and nothing else a query does not need (test sets, source data).

        Args:
            task_cfg: The ``task`` config the model was trained with (not modified).
            data: What ``--data`` names (a folder of images; for some tasks a file).

        Raises:
            ConfigError: The task cannot read unlabeled data of that kind.
        """
        raise ConfigError(f'--data with {cls.__name__}: this task cannot read unlabeled data '
                          "yet; leave --data out to query the config's own pool")

    def sample_files(self, sample_ids: np.ndarray) -> dict[int, str]:
        """The original file of each sample (query listings), ``{}`` when they are not files.

        The default reads :meth:`BaseTask.sample_keys` (relative paths of a folder pool).
        """
        keys = self.sample_keys() or {}  # type: ignore[attr-defined]
        return {int(i): key_path(keys[int(i)]) for i in sample_ids if int(i) in keys}

    def predict_annotations(self, model: nn.Module, sample_ids: np.ndarray,
                            units: list[np.ndarray] | None = None) -> dict[int, Any]:
        """The model's own answer to a query, in the task's annotation format.

        Exports carry it as pre-annotations and reports draw it (boxes, the classes of the
        queried pixels); people correct it instead of starting from nothing.

        Args:
            model: The model that chose the query.
            sample_ids: The queried samples, ``[K]``.
            units: Per sample, the flat unit indices asked for (partial annotation).

        Returns:
            Per id, an annotation (detection boxes may carry a ``score``); ``{}`` by default.
        """
        return {}


class PartialAnnotations:
    """Samples annotated a part at a time (pixels of an image), for unit selectors.

    Attributes:
        partial_annotations: Samples are annotated a part at a time: a labeled sample stays
            a candidate, each round may add units to it, and ``set_annotations`` merges.
            Needs a unit selector and an oracle that answers
            :meth:`~saal_tasks.core.oracle.BaseOracle.annotate_units`.
    """

    partial_annotations: bool = False

    def labeled_units(self, sample_ids: np.ndarray) -> list[np.ndarray]:
        """Per sample, a bool mask ``[*U]`` of the units annotated so far (partial tasks)."""
        raise NotImplementedError(f'{type(self).__name__} annotates whole samples')

    def restrict_annotation(self, annotation: Any, units: np.ndarray) -> Any:
        """The part of a full annotation that covers ``units`` (flat unit indices ``[K]``).

        A simulated oracle answers a unit query with this.
        """
        raise NotImplementedError(f'{type(self).__name__} annotates whole samples')

    def annotation_stats(self) -> dict[str, float]:
        """Numbers about the annotations so far for the round's record (e.g. labeled pixels)."""
        return {}


class StrategyInputs:
    """What baselines and diagnostics read from a model besides the unit losses: features,
    class logits, BADGE's gradient embeddings. Each raises a one-line
    error naming the strategy that needed it unless the task implements it."""

    def embed(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        """Embedding of each sample for diversity-based selectors, shape ``[B, D]``."""
        raise NotImplementedError(
            f'{type(self).__name__} has no embed(): choose a selector that uses scores only')

    def predict_logits(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        """Class logits of each sample, shape ``[B, C]`` (uncertainty baselines).

        Optional: only scorers that read predictive distributions (entropy, least
        confidence, margin) call it.
        """
        raise NotImplementedError(
            f'{type(self).__name__} has no predict_logits(): uncertainty scorers (entropy, '
            'least confidence, margin) need a classification-style task')

    def gradient_embedding(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        """Gradient of each sample's pseudo-label loss w.r.t. the last layer's weights.

        Optional (BADGE). Returns the flattened per-sample gradient, shape ``[B, E]``.
        """
        raise NotImplementedError(
            f'{type(self).__name__} has no gradient_embedding(): BADGE needs it')


class SamplePictures:
    """What a report shows of samples (the defaults: nothing, and the report lists ids)."""

    def preview(self, sample_ids: np.ndarray,
                annotations: dict[int, Any] | None = None) -> list[np.ndarray] | None:
        """One picture per sample for galleries, uint8 RGB ``[H, W, 3]`` each; ``None`` when
        the task has none to show.

        Args:
            sample_ids: The samples, ``[K]``.
            annotations: Their answers (decoded), drawn on the pictures by tasks whose
                answers are places in the image (boxes, revealed pixels); ``None`` or a
                missing id draws the sample alone.
        """
        return None

    def annotation_classes(self, annotation: Any) -> list[int]:
        """The class indices an annotation holds (one for an image label, one per box),
        for the class mix of a query; ``[]`` when it holds none."""
        return []

    def class_names(self) -> list[str] | None:
        """Names of the classes for reports; ``None`` shows the indices."""
        return None


class BaseTask(AnnotationCodec, AnnotationFiles, QueryData, PartialAnnotations,
               StrategyInputs, SamplePictures, ABC):
    """A task adapter: data keyed by stable ids, a model, training, evaluation, unit losses.

    The contract in groups: this class holds what every task implements (data, model,
    scoring protocol); the bases hold the optional capabilities with their defaults
    (:class:`AnnotationCodec`, :class:`AnnotationFiles`, :class:`QueryData`,
    :class:`PartialAnnotations`, :class:`StrategyInputs`, :class:`SamplePictures`).

    Subclasses implement the abstract methods. Conventions every implementation must keep:

    * ``sample_ids`` are absolute and stable across runs (dataset index, image id).
    * :meth:`loss_per_unit` is *unreduced* and *per sample*: the loss of sample ``i`` must not
      depend on which other samples share the batch (no batch-level normalisation), because the
      scorers compare samples that were scored in different batches.
    * Nothing random happens without a seed passed in by the loop.

    Attributes:
        needs_initial_labels: Whether training needs labeled pool samples from the start.
            ``False`` lets ``al.initial_size = 0`` (e.g. a fully labeled source domain).
    """

    needs_initial_labels: bool = True

    # ------------------------------------------------------------------ data
    @abstractmethod
    def sample_ids(self) -> np.ndarray:
        """Ids of every sample of the pool (labeled or not), unique ``int64``, shape ``[N]``."""

    def sample_keys(self) -> dict[int, str] | None:
        """What each sample id points to, for tasks whose ids could move between runs.

        A file-based dataset whose ids are positions in a file list returns, per id, a key
        that changes when the id comes to mean another sample (e.g. ``'train/cat/1.png 4123
        9f1c...'``: relative path, size, content hash). The loop records the keys when a run
        starts and refuses to resume when they changed. ``None`` (the default): the ids are
        bound to their content by construction (a packaged dataset, VOC image names).
        """
        return None

    @abstractmethod
    def ground_truth(self, sample_ids: np.ndarray) -> dict[int, Any]:
        """True annotations of ``sample_ids``; only a simulated oracle may call this."""

    def stratify_labels(self, sample_ids: np.ndarray) -> np.ndarray | None:
        """Class of each sample for a class-balanced initial set, shape ``[K]``, or ``None``.

        Returning ``None`` means the task cannot balance and the loop refuses a balanced
        initial set with a clear error.
        """
        return None

    @abstractmethod
    def set_annotations(self, annotations: dict[int, Any]) -> None:
        """Add oracle answers (sample id -> annotation) to what training may use."""

    # ------------------------------------------------------------------ model
    @abstractmethod
    def build_model(self, seed: int) -> nn.Module:
        """A freshly initialised model; initialisation is a function of ``seed`` only."""

    @abstractmethod
    def train(self, model: nn.Module, labeled_ids: np.ndarray, seed: int) -> nn.Module:
        """Train ``model`` on the annotated samples ``labeled_ids``; return the trained model."""

    def use_log_dir(self, folder: Path | None) -> None:
        """Where the task may keep the logs of the training that comes next.

        The loop passes ``rounds/round_NNN/train_logs`` before each round's training, so a
        task that trains through a logging framework (detection: mmengine's Runner) keeps
        its logs with the round. Tasks that only print (to ``run.log``) ignore it.
        """

    def train_steps(self, model: nn.Module, labeled_ids: np.ndarray, seed: int, start: int,
                    stop: int, total: int, optim_state: dict | None
                    ) -> tuple[nn.Module, dict]:
        """Continue one training run from iteration ``start`` to ``stop`` (of ``total``).

        The in-run schedule (``al.schedule = dict(type='InRunSchedule', ...)``) selects at
        configured iterations of a single training run: the loop calls this once per round
        with consecutive iteration windows, the model of the previous window, and the
        optimizer state this method returned then (``None`` at iteration 0). Learning-rate
        schedules are functions of the iteration out of ``total``, so the windows together
        equal one uninterrupted run.

        Args:
            model: The model to keep training (in place or not).
            labeled_ids: Pool samples with annotations to train on, shape ``[K]``.
            seed: Seed of this window's data order and augmentation.
            start: First iteration of the window (0-based).
            stop: Iteration at which the window ends (exclusive).
            total: Iterations of the whole run.
            optim_state: Optimizer ``state_dict`` at ``start``, or ``None`` at iteration 0.

        Returns:
            The trained model and the optimizer's ``state_dict`` (plain tensors and numbers;
            the loop saves it with the model so a resumed run continues exactly).
        """
        raise ConfigError(f"{type(self).__name__} trains round by round: use "
                          "al.schedule=dict(type='ScratchSchedule') or 'ContinueSchedule', "
                          "not 'InRunSchedule'")

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics of ``model`` on the task's evaluation split (e.g. ``{'accuracy': 91.2}``)."""

    # ------------------------------------------------------------------ scoring protocol
    @abstractmethod
    def pool_batches(self, sample_ids: np.ndarray,
                     batch_size: int) -> Iterator[tuple[np.ndarray, Any]]:
        """Yield ``(ids, inputs)`` batches over ``sample_ids`` in the given order.

        Args:
            sample_ids: Ids to iterate, shape ``[N]``.
            batch_size: Samples per batch; the last batch may be smaller.

        Yields:
            ids of the batch (shape ``[B]``) and model inputs ready for :meth:`loss_per_unit`.
        """

    @abstractmethod
    def pseudo_label(self, model: nn.Module, inputs: Any) -> Any:
        """Pseudo-labels of a batch from ``model`` (already in eval mode, under no_grad)."""

    @abstractmethod
    def loss_per_unit(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        """Unreduced loss of each unit of each sample.

        Args:
            model: The network (possibly with perturbed or functionally replaced weights).
            inputs: A batch from :meth:`pool_batches`.
            targets: Pseudo-labels from :meth:`pseudo_label` for the same batch.

        Returns:
            Tensor of shape ``[B, *U]``: ``[B]`` for images, ``[B, n_boxes]`` for boxes,
            ``[B, H, W]`` for pixels.
        """

    def pseudo_label_and_loss(self, model: nn.Module, inputs: Any) -> tuple[Any, torch.Tensor]:
        """Pseudo-labels of a batch and the unreduced loss against them (graph kept).

        The default runs :meth:`pseudo_label` under ``no_grad`` and then
        :meth:`loss_per_unit`: two forward passes. Tasks whose loss is a function of the
        same logits the pseudo-label is the argmax of (segmentation) override it with one
        pass, which saves a fifth of the exact scorer's work; the values are the same.

        Returns:
            ``(targets, units)`` as :meth:`pseudo_label` and :meth:`loss_per_unit` give them.
        """
        with torch.no_grad():
            targets = self.pseudo_label(model, inputs)
        return targets, self.loss_per_unit(model, inputs, targets)

    # ------------------------------------------------------------------ helpers
    def ground_truth_targets(self, sample_ids: np.ndarray, inputs: Any) -> Any:
        """Ground truth of a batch in the form :meth:`loss_per_unit` takes as ``targets``.

        Optional: only diagnostics that compare with the truth (simulated oracle) call it.
        The default stacks the values of :meth:`ground_truth` into one tensor on the device
        of ``inputs``: integers (class indices) as ``int64``, floats (label vectors,
        regression targets) in the dtype of ``inputs``. Tasks whose annotations are not
        numbers or equal-sized arrays (boxes, masks) override it.

        Args:
            sample_ids: Ids of the batch, shape ``[B]``.
            inputs: The batch from :meth:`pool_batches` for these ids.

        Returns:
            Targets for :meth:`loss_per_unit`, e.g. ``[B]`` class indices.
        """
        ids = np.asarray(sample_ids, dtype=np.int64)
        truth = self.ground_truth(ids)
        try:
            values = np.asarray([truth[int(i)] for i in ids])
        except ValueError:  # ragged annotations (a variable number of boxes)
            values = np.zeros(0, dtype=object)
        if values.dtype.kind not in 'biuf':
            raise NotImplementedError(
                f'{type(self).__name__} annotations are not numeric arrays: implement '
                'ground_truth_targets() to turn them into loss_per_unit targets')
        targets = torch.as_tensor(values)
        if isinstance(inputs, torch.Tensor):
            if targets.is_floating_point() and inputs.is_floating_point():
                targets = targets.to(inputs.dtype)
            targets = targets.to(inputs.device)
        return targets

    def batch_size_of(self, inputs: Any) -> int:
        """Number of samples in a batch of inputs (first dimension for tensors)."""
        if isinstance(inputs, torch.Tensor):
            return inputs.shape[0]
        raise NotImplementedError(f'{type(self).__name__} must implement batch_size_of()')


class TrainExtension:
    """Adds an auxiliary module and loss to a task's training (e.g. LL4AL's loss predictor).

    A task that supports extensions (``ClassificationTask(train_extensions=[...])``) calls
    :meth:`extend_model` on every model it builds (the added modules are then part of the
    model: trained by the task's optimizer, saved and reloaded with it), and adds
    :meth:`extra_loss` to the task loss of every training step. Extensions are registered in
    ``saal_tasks.registry.TRAIN_EXTENSIONS``.
    """

    def extend_model(self, model: nn.Module, example_inputs: Any) -> None:
        """Attach submodules (and forward hooks) to a freshly built ``model``.

        Called inside the task's seeded initialisation, so any parameters drawn here are a
        function of the model seed too.

        Args:
            model: The new model.
            example_inputs: One small batch of model inputs (to infer feature sizes).
        """

    def extra_loss(self, model: nn.Module, inputs: Any, targets: Any,
                   sample_losses: torch.Tensor, epoch: int, num_epochs: int) -> torch.Tensor:
        """Auxiliary loss of a training step, added to the task loss.

        Args:
            model: The model being trained (its forward has just run on ``inputs``).
            inputs: The step's batch of inputs.
            targets: The step's annotations.
            sample_losses: Unreduced task loss of each sample, shape ``[B]`` (not detached).
            epoch: Current epoch, 1-based.
            num_epochs: Epochs of this training.

        Returns:
            A scalar tensor.
        """
        raise NotImplementedError


def batched_eval(task: BaseTask, model: nn.Module, sample_ids: np.ndarray, batch_size: int,
                 fn: Callable[[nn.Module, Any], torch.Tensor]) -> np.ndarray:
    """Apply ``fn(model, inputs) -> Tensor [B, ...]`` over ``sample_ids`` in eval mode.

    Args:
        task: Task giving the batches.
        model: Model, put in eval mode for the call and restored afterwards.
        sample_ids: Ids, shape ``[N]``.
        batch_size: Samples per batch.
        fn: Function of a model and a batch of inputs.

    Returns:
        The concatenated outputs as float64, shape ``[N, ...]``.
    """
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.no_grad():
            for _, inputs in task.pool_batches(np.asarray(sample_ids, dtype=np.int64),
                                               batch_size):
                chunks.append(fn(model, inputs).detach().double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0,))
