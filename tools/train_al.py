"""Run a sharpness-aware active-learning experiment from a config file.

Example::

    python tools/train_al.py configs/cls/saal_cnn_digits.py
    python tools/train_al.py configs/cls/saal_cnn_digits.py --resume
    python tools/train_al.py CONFIG --cfg-options al.num_rounds=5 scorer.mode=diff --seed 1
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from pathlib import Path

# Running from a checkout without installing still finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

from saal_tasks.core.loop import MANIFEST, ActiveLearningLoop, ResumeError  # noqa: E402
from saal_tasks.core.pool_state import PoolStateMismatchError  # noqa: E402

#: Errors that mean "the input is wrong", reported as one line (set SAAL_DEBUG=1 for the
#: traceback). Anything else is a bug and keeps its traceback.
USER_ERRORS = (ResumeError, PoolStateMismatchError, FileNotFoundError, KeyError, TypeError,
               ValueError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Sharpness-aware active learning')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='folder for state, logs and outputs '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. al.num_rounds=5 scorer.mode=diff')
    parser.add_argument('--resume', action='store_true',
                        help='continue the run in the work dir after its last finished round')
    parser.add_argument('--seed', type=int, help='seed of every random choice (default: '
                        'the config\'s seed)')
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> Config:
    """The config with command-line overrides applied (the only place the CLI touches it)."""
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file {args.config} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.seed is not None:
        cfg.seed = args.seed
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args)
        work_dir = Path(cfg.work_dir)
        if not args.resume and (work_dir / MANIFEST).exists():
            raise ResumeError(f'{work_dir} already holds a run: pass --resume to continue it, '
                              'or choose another --work-dir')
        work_dir.mkdir(parents=True, exist_ok=True)
        MMLogger.get_instance('saal_tasks', log_file=str(work_dir / 'run.log'),
                              log_level='INFO')
        loop = ActiveLearningLoop.from_cfg(cfg)
        if not args.resume:
            # A resumed run keeps the config it was started with (its hash is checked).
            cfg.dump(str(work_dir / osp.basename(args.config)))
        records = loop.run(resume=args.resume)
    except USER_ERRORS as err:
        if os.environ.get('SAAL_DEBUG'):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f'error: {message}', file=sys.stderr)
        return 2
    if records:
        last = records[-1]
        metric = {k: v for k, v in last.items() if k not in ('round', 'num_labeled')
                  and not k.endswith('_s') and not k.startswith('num_')}
        print(f'finished: {len(records)} rounds, {last["num_labeled"]} labeled, {metric}; '
              f'outputs in {cfg.work_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
