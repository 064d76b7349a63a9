"""The tiny segmentation setting shared by the segmentation tests.

Generated SYNTHIA/Cityscapes-layout data (12 source, 6 target-train, 4 target-val images of
32x64) and the demo config shrunk to it: two selections inside one 12-iteration run.
"""
from __future__ import annotations

from pathlib import Path

from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
SIZE = (32, 64)


def write_tiny_seg_data(root: Path) -> Path:
    """Write the tiny demo data into ``root`` and return it."""
    from saal_tasks.tasks.segmentation.demo import write_seg_demo
    write_seg_demo(root, num_source=12, num_target_train=6, num_target_val=4, size=SIZE,
                   seed=3)
    return root


def tiny_seg_cfg(demo_root: Path, work_dir: Path) -> Config:
    """``configs/seg/ri_saal_tiny_demo.py`` on the tiny data (selections at iterations 6, 9)."""
    cfg = Config.fromfile(ROOT / 'configs/seg/ri_saal_tiny_demo.py')
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'task.source.data_root': str(demo_root / 'synthia'),
        'task.target.data_root': str(demo_root / 'cityscapes'),
        'task.val.data_root': str(demo_root / 'cityscapes'),
        'task.source_size': SIZE, 'task.target_size': SIZE,
        'task.batch_size': 2, 'task.target_batch_size': 2, 'task.log_interval': 1000,
        'al.schedule.round_iters': [6, 9, 12],
        'hooks': [],
    })
    return cfg
