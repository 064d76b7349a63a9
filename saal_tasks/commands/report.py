"""Draw a run's visual report, and check a report in a headless browser.

In a checkout ``python tools/report.py``. Example::

    python tools/report.py work_dirs/saal_cnn_digits            # (re)writes report.html
    python tools/report.py work_dirs/saal_cnn_digits --check    # + headless Chromium check

``--check`` opens the page in headless Chromium (Debian: ``apt-get install chromium``),
fails with one line when an image did not load, and saves a screenshot beside the page
(``report.png``). It also checks the ``report.html`` of a query folder (``tools/query.py``).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

from ..cli import run_reporting_errors
from ..core.errors import ConfigError, MissingDependencyError
from ..engine.store import MetricsLog
from ..hooks.report import run_report
from ..core.build import build_checked
from ..registry import TASKS

#: Browser programs tried, in order.
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Draw a run's report.html")
    parser.add_argument('work_dir', help="a run's work dir (or a query folder with --check)")
    parser.add_argument('--no-pictures', action='store_true',
                        help='ids only: do not build the task (no dataset needed)')
    parser.add_argument('--check', action='store_true',
                        help='open the page in headless Chromium: fail on a broken image, '
                        'save report.png')
    return parser.parse_args(argv)


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise MissingDependencyError('no Chromium found for --check: apt-get install chromium '
                                 '(Debian/Ubuntu), or leave --check out')


def check_in_browser(page: Path, screenshot: Path) -> int:
    """Load ``page`` in headless Chromium; return how many images failed to load.

    The page's own script writes that count into ``<body data-broken="N">`` once loaded;
    ``?`` (the script never ran) counts as a failure.
    """
    flags = ['--headless', '--no-sandbox', '--disable-gpu', '--virtual-time-budget=10000']
    url = page.resolve().as_uri()
    dom = subprocess.run([_browser(), *flags, '--dump-dom', url], capture_output=True,
                         text=True, timeout=120).stdout
    subprocess.run([_browser(), *flags, f'--screenshot={screenshot}',
                    '--window-size=1400,1000', url], capture_output=True, timeout=120)
    found = re.search(r'data-broken="([^"]*)"', dom)
    if found is None or not found.group(1).isdigit():
        raise ConfigError(f'{page} did not finish loading in Chromium (its check script did '
                          'not run): open it in a browser to see why')
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> int:
        work_dir = Path(args.work_dir)
        page = work_dir / 'report.html'
        if (work_dir / 'manifest.json').exists():
            config_path = work_dir / 'config.json'
            if not config_path.exists():
                raise FileNotFoundError(f'{config_path} does not exist: is {work_dir} a run?')
            config = json.loads(config_path.read_text())
            task = None
            if not args.no_pictures:
                # As Config.fromfile does when a run starts: the modules that register the
                # task (detection and segmentation configs name them).
                from mmengine.utils import import_modules_from_strings
                if config.get('custom_imports'):
                    import_modules_from_strings(**config['custom_imports'])
                task = build_checked(TASKS, config['task'], 'task')
            metrics = work_dir / 'metrics.jsonl'
            records = MetricsLog.decode(metrics.read_text()) if metrics.exists() else []
            # The run's name, as its hook titled the page: the config dumped beside it.
            dumped = sorted(work_dir.glob('*.py'))
            page = run_report(work_dir, task, records,
                              dumped[0].stem if dumped else work_dir.name)
            print(f'report: {page} ({len(records)} rounds)')
        elif not page.exists():
            raise FileNotFoundError(f'{work_dir} holds neither a run (manifest.json) nor a '
                                    'report.html: check the path')
        if args.check:
            screenshot = page.with_suffix('.png')
            broken = check_in_browser(page, screenshot)
            if broken:
                raise ConfigError(f'{page}: {broken} image(s) did not load in Chromium')
            print(f'checked in Chromium: every image loaded; screenshot {screenshot}')
        return 0

    return run_reporting_errors(run)
