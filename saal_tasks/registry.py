"""Registries of saal_tasks components (mmengine ``Registry``, scope ``saal_tasks``).

Every pluggable piece of an active-learning run is looked up by ``type`` in one of these
registries, so a config names components and a new one only needs ``@REG.register_module()``.
``locations`` lets mmengine import the defining modules lazily on first build, which keeps
``import saal_tasks`` free of work and of mmcv/mmdet/mmseg imports.
"""
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import Registry

#: Task adapters (classification, detection, segmentation): data, model, train, evaluate.
TASKS = Registry('task', scope='saal_tasks', locations=['saal_tasks.tasks'])
#: Acquisition scorers: one score per unit (image, box or pixel).
SCORERS = Registry('scorer', scope='saal_tasks',
                   locations=['saal_tasks.scorers'])
#: Weight perturbations (SAM with dual norm q, ASAM) used by the sharpness scorer.
PERTURBATIONS = Registry(
    'perturbation', scope='saal_tasks', locations=['saal_tasks.core.perturbation'])
#: Engines that compute perturbed losses (reference, vectorized, batch-wise).
ENGINES = Registry('engine', scope='saal_tasks', locations=['saal_tasks.scorers'])
#: Selectors: turn scores (and optionally embeddings) into a query of a given budget.
SELECTORS = Registry('selector', scope='saal_tasks', locations=['saal_tasks.selectors'])
#: Oracles: answer a query with annotations (simulated ground truth, files, ...).
ORACLES = Registry('oracle', scope='saal_tasks', locations=['saal_tasks.oracles'])
#: Hooks called by the active-learning loop at fixed points of each round.
AL_HOOKS = Registry('al_hook', scope='saal_tasks',
                    locations=['saal_tasks.hooks'])
#: Networks built by task adapters (classification backbones and heads).
MODELS = Registry('model', scope='saal_tasks',
                  locations=['saal_tasks.tasks.classification', 'saal_tasks.scorers'])
#: Dataset builders used by task adapters.
DATASETS = Registry(
    'dataset', scope='saal_tasks', locations=['saal_tasks.tasks.classification'])
#: Optimizers: our SAM plus every torch optimizer through mmengine's registry (the parent).
OPTIMIZERS = Registry(
    'optimizer', parent=MMENGINE_OPTIMIZERS, scope='saal_tasks', locations=['saal_tasks.optim'])
#: Training schedules of the loop (retrain from scratch, continue, in-run selection).
SCHEDULES = Registry('schedule', scope='saal_tasks', locations=['saal_tasks.engine.schedules'])
#: How the initial labeled set is drawn (class-balanced, random).
INITIAL_SETS = Registry(
    'initial_set', scope='saal_tasks', locations=['saal_tasks.engine.initial_sets'])
#: Training extensions: auxiliary modules and losses added to a task's training (LL4AL).
TRAIN_EXTENSIONS = Registry(
    'train_extension', scope='saal_tasks', locations=['saal_tasks.scorers'])
#: Sample embeddings for diversity selectors (model features, raw inputs, precomputed files).
EMBEDDINGS = Registry('embedding', scope='saal_tasks', locations=['saal_tasks.selectors'])

__all__ = ['TASKS', 'SCORERS', 'PERTURBATIONS', 'ENGINES', 'SELECTORS', 'ORACLES', 'AL_HOOKS',
           'MODELS', 'DATASETS', 'OPTIMIZERS', 'TRAIN_EXTENSIONS', 'EMBEDDINGS', 'SCHEDULES',
           'INITIAL_SETS']
