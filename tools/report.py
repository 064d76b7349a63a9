"""Draw a run's visual report, and check a report in a headless browser.

A thin wrapper over :mod:`saal_tasks.commands.report`; see there.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Running from a checkout without installing still finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saal_tasks.commands.report import main, parse_args  # noqa: E402

__all__ = ['main', 'parse_args']

if __name__ == '__main__':
    sys.exit(main())
