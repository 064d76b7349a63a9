"""Query mode: score images nobody has labeled with a trained model; export the picks.

A thin wrapper over :mod:`saal_tasks.commands.query` (installed as ``saal-query``); see there.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Running from a checkout without installing still finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saal_tasks.commands.query import main, parse_args  # noqa: E402

__all__ = ['main', 'parse_args']

if __name__ == '__main__':
    sys.exit(main())
