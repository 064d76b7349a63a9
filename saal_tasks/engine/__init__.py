"""The run engine, one floor above the core: the loop (rounds and hooks), its stages, the run
store (round folders, manifest, checksums, model and optimizer files, config diff),
schedules, initial sets, sharded scoring and the checked config boundary. It knows no task
and no plugin: components come from the registries, and what one needs it declares in its
contract."""
from .loop import ActiveLearningLoop
from .store import CONFIG_JSON, MANIFEST, METRICS, config_hash

__all__ = ['ActiveLearningLoop', 'CONFIG_JSON', 'MANIFEST', 'METRICS', 'config_hash']
