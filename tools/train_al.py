"""Run a sharpness-aware active-learning experiment from a config file.

A thin wrapper over :mod:`saal_tasks.commands.train` (installed as ``saal-train``); see there.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Running from a checkout without installing still finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saal_tasks.commands.train import main, parse_args  # noqa: E402

__all__ = ['main', 'parse_args']

if __name__ == '__main__':
    sys.exit(main())
