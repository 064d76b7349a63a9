"""The benchmark harness: planning, per-cell configs, resume of an interrupted sweep, reports."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from saal_tasks.benchmark import (SweepError, aubc, cell_config, cell_status, penalty_matrix,
                                  plan_cells, run_sweep, summarize, write_report)
from saal_tasks.benchmark.metrics import load_curve
from saal_tasks.engine import config_hash
from saal_tasks.hooks import ALHook
from saal_tasks.registry import AL_HOOKS

ROOT = Path(__file__).resolve().parents[1]


@AL_HOOKS.register_module(force=True)
class _CountRunsHook(ALHook):
    """Appends the work dir to a log at every (re)start of a run."""

    def __init__(self, log: str) -> None:
        self.log = log

    def before_run(self, loop):
        with open(self.log, 'a') as f:
            f.write(f'{loop.work_dir}\n')


@AL_HOOKS.register_module(force=True)
class _InterruptOnceHook(ALHook):
    """Raises KeyboardInterrupt after round 2 the first time (the flag file remembers)."""

    def __init__(self, flag: str) -> None:
        self.flag = Path(flag)

    def after_round(self, loop, round_idx, record):
        if round_idx == 2 and not self.flag.exists():
            self.flag.write_text('interrupted')
            raise KeyboardInterrupt


def sweep_cfg(tmp_path, interrupt=True):
    return Config(dict(
        task=dict(type='ClassificationTask', dataset=dict(type='DigitsData'),
                  model=dict(type='SmallCNN', width=4), optimizer=dict(type='Adam', lr=1e-2),
                  epochs=1, batch_size=64, log_interval=1000),
        al=dict(num_rounds=2, budget=5, subset_size=40, initial_size=20),
        oracle=dict(type='SimulatedOracle'),
        hooks=[dict(type='_CountRunsHook', log=str(tmp_path / 'runs.log'))],
        strategies=dict(
            random=dict(scorer=dict(type='RandomScorer'), selector=dict(type='TopKSelector')),
            entropy=dict(scorer=dict(type='EntropyScorer'), selector=dict(type='TopKSelector'),
                         hooks=[dict(type='_InterruptOnceHook', flag=str(tmp_path / 'flag'))]
                         if interrupt else [])),
        optimizers=dict(adam=dict(type='Adam', lr=1e-2), sgd=dict(type='SGD', lr=0.1)),
        sweep=dict(strategies=['random', 'entropy'], optimizers=['adam'], seeds=[0, 1])))


# ---------------------------------------------------------------- metrics (known answers)
def test_aubc_known_answers():
    assert aubc([0, 10, 20], [0.0, 10.0, 10.0]) == pytest.approx(7.5)  # (50 + 100) / 20
    assert aubc([20, 30], [50.0, 70.0]) == pytest.approx(60.0)
    assert aubc([5], [42.0]) == 42.0
    with pytest.raises(ValueError, match='increasing'):
        aubc([0, 0], [1.0, 2.0])


def test_penalty_matrix_counts_paired_wins():
    def entry(values):
        return {'seeds': [0, 1, 2], 'final': {'values': values}, 'aubc': {'values': values}}
    summary = {'adam': {'a': entry([3.0, 1.0, 5.0]), 'b': entry([2.0, 2.0, 5.0])},
               'sam': {'a': entry([1.0, 1.0, 1.0]), 'b': entry([0.0, 0.0, 0.0])}}
    matrix = penalty_matrix(summary, ['a', 'b'])
    # adam: a wins seed 0, loses 1, ties 2; sam: a wins all three -> 4 of 6.
    assert matrix['wins'] == [[0, 4], [1, 0]] and matrix['cases'] == [[0, 6], [6, 0]]
    assert matrix['rate'][0][1] == pytest.approx(4 / 6) and matrix['rate'][0][0] is None


def test_summarize_mean_and_sample_std():
    from saal_tasks.benchmark import Cell
    curves = {Cell('s', 'o', seed, ''): ([10, 20], [v, v + 10.0])
              for seed, v in enumerate([50.0, 60.0, 70.0])}
    stats = summarize(curves)['o']['s']
    assert stats['final']['mean'] == pytest.approx(70.0)
    assert stats['final']['std'] == pytest.approx(10.0)  # ddof = 1
    assert stats['aubc']['values'] == pytest.approx([55.0, 65.0, 75.0])
    assert stats['curve']['mean'] == pytest.approx([60.0, 70.0])


# ---------------------------------------------------------------- planning
def test_plan_and_cell_config(tmp_path):
    cfg = sweep_cfg(tmp_path)
    cells = plan_cells(cfg, tmp_path / 'sweep')
    assert [c.name for c in cells] == ['random/adam/seed_0', 'entropy/adam/seed_0',
                                       'random/adam/seed_1', 'entropy/adam/seed_1']
    cell = plan_cells(cfg, tmp_path / 'sweep', ['entropy'], ['sgd'], [3])[0]
    run = cell_config(cfg, cell)
    assert 'strategies' not in run and 'sweep' not in run and 'optimizers' not in run
    assert run.scorer.type == 'EntropyScorer' and run.task.optimizer.type == 'SGD'
    assert [h['type'] for h in run.hooks] == ['_CountRunsHook', '_InterruptOnceHook']
    assert run.seed == 3 and run.work_dir == str(tmp_path / 'sweep/cells/entropy/sgd/seed_3')
    # A cell's hash depends on what it runs only, not on the other strategies.
    other = sweep_cfg(tmp_path)
    other.strategies.random.scorer = dict(type='MarginScorer')
    assert config_hash(cell_config(other, cell)) == config_hash(run)


def test_planning_errors(tmp_path):
    cfg = sweep_cfg(tmp_path)
    with pytest.raises(SweepError, match="unknown strategy 'badge'"):
        plan_cells(cfg, tmp_path, strategies=['badge'])
    with pytest.raises(SweepError, match='seeds must be non-negative'):
        plan_cells(cfg, tmp_path, seeds=[-1])
    cfg.strategies.random['scorrer'] = dict(type='RandomScorer')
    cell = plan_cells(cfg, tmp_path, ['random'])[0]
    with pytest.raises(SweepError, match="unknown key 'scorrer'"):
        cell_config(cfg, cell)


# ---------------------------------------------------------------- resume of a sweep
def _runs(tmp_path):
    return (tmp_path / 'runs.log').read_text().splitlines()


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_cells(tmp_path):
    cfg = sweep_cfg(tmp_path)
    cells = plan_cells(cfg, tmp_path / 'sweep')
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, cells, progress=lambda _: None)
    assert [cell_status(cfg, c) for c in cells] == ['done', 'partial', 'todo', 'todo']
    finished = Path(cells[0].work_dir) / 'cell.json'
    before = finished.read_text()
    assert len(_runs(tmp_path)) == 2

    results = run_sweep(cfg, cells, progress=lambda _: None)
    runs = _runs(tmp_path)[2:]
    # The finished cell did not run again; the interrupted one resumed once; the rest ran once.
    assert runs == [cells[1].work_dir, cells[2].work_dir, cells[3].work_dir]
    assert finished.read_text() == before
    assert [cell_status(cfg, c) for c in cells] == ['done'] * 4
    assert results[1]['resumed'] and not results[2]['resumed']
    x, _ = load_curve(cells[1], 'accuracy')
    assert x == [20, 25, 30]
    # The resumed cell ends exactly like an uninterrupted run of the same cell.
    clean = sweep_cfg(tmp_path / 'clean', interrupt=False)
    (tmp_path / 'clean').mkdir()
    ref = plan_cells(clean, tmp_path / 'clean' / 'sweep', ['entropy'], ['adam'], [0])[0]
    run_sweep(clean, [ref], progress=lambda _: None)
    assert load_curve(ref, 'accuracy') == load_curve(cells[1], 'accuracy')
    for r in (1, 2):
        name = f'rounds/round_{r:03d}/selected.json'
        assert (json.loads((Path(ref.work_dir) / name).read_text())['sample_ids']
                == json.loads((Path(cells[1].work_dir) / name).read_text())['sample_ids'])

    # The report: table, JSON and figures from the finished cells.
    curves = {c: load_curve(c, 'accuracy') for c in cells}
    summary = summarize(curves)
    paths = write_report(tmp_path / 'report', summary, ['random', 'entropy'], ['adam'], 2,
                         'accuracy')
    data = json.loads(paths['json'].read_text())
    finals = [curves[c][1][-1] for c in cells if c.strategy == 'random']
    assert data['summary']['adam']['random']['final']['mean'] == pytest.approx(np.mean(finals))
    assert data['summary']['adam']['random']['final']['std'] == pytest.approx(
        np.std(finals, ddof=1))
    table = paths['markdown'].read_text()
    assert table.count('\n') == 4 and '| random |' in table and '±' in table
    for key in ('curves', 'penalty_final', 'penalty_aubc'):
        assert paths[key].stat().st_size > 5000


# ---------------------------------------------------------------- the command line
def _tool_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location('benchmark_al',
                                                  ROOT / 'tools' / 'benchmark_al.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.slow
def test_cli_dry_run(tmp_path):
    config = ROOT / 'configs' / 'sweeps' / 'digits_table1.py'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'benchmark_al.py'), str(config),
                           '--dry-run', '--seeds', '2', '--work-dir', str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 11 * 2 * 2 and all(l.startswith('todo') for l in lines)


def test_cli_errors_are_one_line(tmp_path, capsys):
    main = _tool_main()
    config = ROOT / 'configs' / 'sweeps' / 'digits_table1.py'
    assert main([str(config), '--strategies', 'saal', 'bald', '--work-dir', str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: unknown strategy 'bald': the config defines saal, saal_kmeanspp, random, "
        'entropy, least_confidence, margin, coreset, badge, ll4al, vaal, probcover']
    assert main([str(tmp_path / 'nope.py')]) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_curve_figure_has_distinct_styles_and_one_shared_legend():
    from saal_tasks.benchmark.report import curve_figure, curve_styles
    strategies = [f's{k}' for k in range(12)] + ['saal']
    styles = curve_styles(strategies)
    pairs = {(tuple(v['color']), v['linestyle']) for v in styles.values()}
    assert len(pairs) == len(strategies)                     # no two strategies alike
    assert styles['saal']['lw'] > styles['s0']['lw']
    curve = {'curve': {'num_labeled': [10, 20], 'mean': [50.0, 60.0], 'std': [1.0, 2.0]}}
    summary = {opt: {s: curve for s in strategies} for opt in ('adam', 'sam')}
    fig = curve_figure(summary, strategies, ['adam', 'sam'], 'accuracy',
                       {'saal': 'SAAL', 'adam': 'Adam'})
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == [f's{k}' for k in range(12)] + ['SAAL']
    for ax in fig.axes:                                      # same style in every panel
        assert [line.get_color() for line in ax.get_lines()] == \
            [styles[s]['color'] for s in strategies]
