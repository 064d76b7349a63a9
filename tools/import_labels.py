"""Import people's answers to a query exported by ``oracle = dict(type='FileOracle')``.

A thin wrapper over :mod:`saal_tasks.commands.import_labels` (installed as
``saal-import``); see there.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Running from a checkout without installing still finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saal_tasks.commands.import_labels import main, parse_args  # noqa: E402

__all__ = ['main', 'parse_args']

if __name__ == '__main__':
    sys.exit(main())
