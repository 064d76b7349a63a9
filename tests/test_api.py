"""The Python API: the README's example runs as written, and equals the command-line run."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from saal_tasks.api import Learner
from saal_tasks.core.errors import AnnotationError

ROOT = Path(__file__).resolve().parents[1]


def readme_example(index: int = 0) -> str:
    text = (ROOT / 'README.md').read_text()
    section = text[text.index('### Python API'):text.index('### The visual report')]
    return re.findall(r'```python\n(.*?)```', section, re.S)[index]


def test_readme_example_runs_and_equals_a_simulated_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = readme_example().replace("'configs/", f"'{ROOT}/configs/")
    exec(compile(code, 'README.md', 'exec'), {})
    out = capsys.readouterr().out
    assert re.search(r'round 0: 20 to label', out) and 'round 2: 10 to label' in out
    assert 'report: ' in out and (tmp_path / 'work_dirs/api_demo/report.html').is_file()
    # People answering with the truth = the simulated oracle: the same labels and metrics.
    from test_errors import run
    from mmengine.config import Config
    from saal_tasks.cli import load_config
    cfg = load_config(str(ROOT / 'configs/cls/saal_cnn_digits.py'),
                      work_dir=str(tmp_path / 'sim'),
                      cfg_options={'al.num_rounds': 2, 'task.epochs': 5})
    assert isinstance(cfg, Config)
    run(cfg)
    for name in ('rounds/round_001/selected.json', 'rounds/round_002/selected.json'):
        assert json.loads((tmp_path / 'sim' / name).read_text()) == \
            json.loads((tmp_path / 'work_dirs/api_demo' / name).read_text())

    def metrics(folder: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if not k.endswith('_s')}
                for line in (folder / 'metrics.jsonl').read_text().splitlines()]
    assert metrics(tmp_path / 'sim') == metrics(tmp_path / 'work_dirs/api_demo')

    # The query-mode example, on the run's last model and a folder of digit images: the
    # same picks as tools/query.py with the same arguments.
    from test_query import _digit_folder, _query_tool
    _digit_folder(tmp_path / 'my_images', count=12)
    code = readme_example(1).replace("'configs/", f"'{ROOT}/configs/")
    exec(compile(code, 'README.md', 'exec'), {})
    out = capsys.readouterr().out
    picked = json.loads(re.search(r'picked (\[.*?\])', out).group(1))
    assert len(picked) == 5 and (tmp_path / 'work_dirs/api_query/report.html').is_file()
    proc = _query_tool(ROOT / 'configs/cls/saal_cnn_digits.py', '--checkpoint',
                       tmp_path / 'work_dirs/api_demo/rounds/round_002/model.pth',
                       '--data', tmp_path / 'my_images', '--budget', 5,
                       '--cfg-options', 'al.num_rounds=2', 'task.epochs=5',
                       '--out', tmp_path / 'cli_query')
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'cli_query/selected.csv').read_bytes() == \
        (tmp_path / 'work_dirs/api_query/selected.csv').read_bytes()


def test_bad_answers_are_refused_and_a_new_learner_continues(tmp_path):
    options = {'al.num_rounds': 1, 'task.epochs': 1, 'task.model.width': 4}
    config = ROOT / 'configs/cls/saal_cnn_digits.py'
    learner = Learner.from_config(config, work_dir=tmp_path / 'w', cfg_options=options)
    first = learner.query()
    assert first.round == 0 and len(first.sample_ids) == 20
    truth = learner.loop.task.ground_truth(first.sample_ids)
    missing = dict(list(truth.items())[:-1])
    with pytest.raises(AnnotationError):
        learner.teach(missing)
    with pytest.raises(AnnotationError):
        learner.teach({**truth, int(first.sample_ids[0]): 99})
    assert learner.teach(truth) == 20
    # A new learner (a restarted notebook) continues at the next query.
    again = Learner.from_config(config, work_dir=tmp_path / 'w', cfg_options=options)
    second = again.query()
    assert second.round == 1 and len(second.sample_ids) == 10
    assert not np.isin(second.sample_ids, first.sample_ids).any()
    again.teach(again.loop.task.ground_truth(second.sample_ids))
    assert again.query() is None and [r['round'] for r in again.records] == [1, 2]
