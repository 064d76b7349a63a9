"""SharpnessDiagnosticsHook against a stand-in loop, and end to end through the CLI."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from saal_tasks.core.errors import ConfigError
from saal_tasks.core.pool_state import PoolState
from saal_tasks.hooks import SharpnessDiagnosticsHook
from saal_tasks.oracles import FileOracle, SimulatedOracle
from saal_tasks.registry import AL_HOOKS
from saal_tasks.scorers import SharpnessScorer

from conftest import bit_identical, snapshot
from diagnostics_tasks import TensorTask

ROOT = Path(__file__).resolve().parents[1]


def _loop(tmp_path, oracle=SimulatedOracle()):
    """What the hook reads from the loop: task, model, state, scorer, oracle, work_dir..."""
    task = TensorTask(num_samples=40)
    state = PoolState(task.sample_ids())
    state.mark_labeled(np.arange(8), 1)
    model = task.train(task.build_model(0), state.labeled_ids(), seed=0)
    scorer = SharpnessScorer(perturbation=dict(type='SAMPerturbation', rho=0.1),
                             engine=dict(type='VectorizedEngine', chunk_size=8))
    return SimpleNamespace(task=task, model=model, state=state, scorer=scorer, oracle=oracle,
                           work_dir=str(tmp_path), num_rounds=2, subset_size=20,
                           run_name='fake')


def _run_hook(loop, hook, candidates):
    hook.before_run(loop)
    hook.after_train(loop, 1, loop.model)
    hook.after_evaluate(loop, 1, {'accuracy': 50.0})
    result = loop.scorer.score(loop.task, loop.model, candidates, np.random.default_rng(0))
    hook.after_score(loop, 1, result)
    hook.after_evaluate(loop, 3, {'accuracy': 60.0})  # the last round: nothing is scored
    hook.after_run(loop, [])
    return result


def test_hook_writes_round_outputs(tmp_path):
    loop = _loop(tmp_path)
    hook = AL_HOOKS.build(dict(type='SharpnessDiagnosticsHook', num_samples=12,
                               landscape_rounds=[1], landscape_steps=5, power_iters=30))
    candidates = np.arange(10, 30)
    weights, torch_rng, np_rng = snapshot(loop.model), torch.get_rng_state(), np.random.get_state()
    result = _run_hook(loop, hook, candidates)
    # The run is unaffected: same weights, global random states untouched.
    assert bit_identical(loop.model, weights) and torch.equal(torch.get_rng_state(), torch_rng)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_rng))
    out = tmp_path / 'diagnostics'
    for name in ('round_001.json', 'round_001.npz', 'round_001.png', 'round_003.json',
                 'round_001_landscape.json', 'round_001_landscape.png', 'summary.json',
                 'summary.png'):
        assert (out / name).exists(), name
    r1 = json.loads((out / 'round_001.json').read_text())
    assert r1['round'] == 1 and r1['num_labeled'] == 8 and r1['num_scored'] == 20
    assert r1['num_diagnosed'] == 12 and r1['metrics'] == {'accuracy': 50.0}
    assert r1['rho'] == 0.1 and r1['use_truth'] is True
    # The hook's SAAL score is the scorer's score: identical ranking.
    assert r1['acquisition_score_spearman_with_saal'] == pytest.approx(1.0)
    arrays = np.load(out / 'round_001.npz')
    assert set(arrays['sample_ids']) <= set(candidates) and len(arrays['sample_ids']) == 12
    pos = np.searchsorted(result.sample_ids, arrays['sample_ids'])
    np.testing.assert_allclose(arrays['score'], result.scores[pos], rtol=1e-9)
    np.testing.assert_allclose(arrays['acquisition_score'], result.scores[pos])
    pl = r1['pseudo_labels']
    assert 0 <= pl['psi'] <= 1 and pl['psi'] == pytest.approx(arrays['label_kept'].mean())
    assert pl['theorem_3_1_holds_fraction'] == 1.0
    assert pl['proposition_3_2_holds_fraction'] == 1.0
    dec = r1['decomposition']
    assert dec['mean']['loss'] == pytest.approx(arrays['clean_loss'].mean())
    assert dec['mean']['lambda_max'] == pytest.approx(arrays['lambda_max'].mean())
    assert 0 <= dec['theorem_3_3']['bound_holds_fraction'] <= 1
    sets = r1['perturbed_loss']
    assert sets['pi_labeled'] == pytest.approx(8 / 40)
    assert sets['total'] == pytest.approx(0.2 * sets['labeled'] + 0.8 * sets['unlabeled'])
    assert sets['labeled'] > sets['labeled_clean']
    # The last round diagnoses a fresh uniform subset of the unlabeled pool.
    r3 = json.loads((out / 'round_003.json').read_text())
    assert r3['num_scored'] == 0 and r3['num_diagnosed'] == 12
    assert 'acquisition_score_spearman_with_saal' not in r3
    land = json.loads((out / 'round_001_landscape.json').read_text())
    assert np.asarray(land['loss']).shape == (5, 5) and land['num_samples'] == 8
    assert land['targets'] == 'ground truth'
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['rounds'] == [1, 3] and summary['seconds_this_process'] > 0


def test_hook_without_ground_truth_skips_truth_quantities(tmp_path):
    loop = _loop(tmp_path, oracle=FileOracle())  # people answer: no ground truth
    hook = SharpnessDiagnosticsHook(decomposition=False, plot=False, final_round=False)
    _run_hook(loop, hook, np.arange(10, 20))
    r1 = json.loads((tmp_path / 'diagnostics' / 'round_001.json').read_text())
    assert r1['use_truth'] is False
    assert 'psi' in r1['pseudo_labels'] and 'relative_margin' not in r1['pseudo_labels']
    assert 'perturbed_loss' not in r1 and 'decomposition' not in r1
    assert not (tmp_path / 'diagnostics' / 'round_003.json').exists()
    assert not (tmp_path / 'diagnostics' / 'summary.png').exists()


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_samples=0), 'num_samples must be an integer >= 1'),
    (dict(reduction='max'), "reduction must be 'sum' or 'mean'"),
    (dict(landscape_rounds=[0]), 'landscape_rounds must be round numbers'),
    (dict(power_iters=1), 'power_iters must be an integer >= 2'),
])
def test_hook_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SharpnessDiagnosticsHook(**kwargs)


def _diagnose_tool():
    """tools/diagnose.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location('diagnose_tool', ROOT / 'tools' / 'diagnose.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_diagnostics_config_end_to_end(tmp_path, capsys):
    """The demo config with diagnostics through train_al.py, then both diagnose commands."""
    config = ROOT / 'configs' / 'cls' / 'saal_cnn_digits_diagnostics.py'
    work = tmp_path / 'run'
    small = ['task.epochs=2', 'task.model.width=4']
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train_al.py'), str(config), '--work-dir',
         str(work), '--cfg-options', 'al.num_rounds=1', 'al.subset_size=40', *small,
         'hooks.1.num_samples=16', 'hooks.1.power_iters=4', 'hooks.1.landscape_steps=5',
         'hooks.1.save_model=True'], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = work / 'diagnostics'
    assert {'round_001.json', 'round_002.json', 'round_001_landscape.png',
            'round_002_landscape.png', 'summary.png', 'round_002_model.pth'} <= {
        p.name for p in out.iterdir()}
    assert 'diagnostics round 1: psi' in proc.stdout + proc.stderr
    diagnose = _diagnose_tool().main
    common = [str(config), '--work-dir', str(work), '--cfg-options', *small]
    assert diagnose(['rho-sweep', *common, '--round', '1', '--rhos', '0.01', '0.05',
                     '--num-samples', '30']) == 0
    result = json.loads((out / 'rho_sweep_round_001.json').read_text())
    assert [r['rho'] for r in result['results']] == [0.01, 0.05]
    assert result['num_labeled'] == 20 and result['num_samples'] == 30
    assert diagnose(['landscape', *common, '--steps', '3']) == 0
    assert (out / 'landscape_round_002_labeled.png').exists()  # default: the last round
    capsys.readouterr()
    assert diagnose(['landscape', *common, '--round', '7']) == 2
    assert capsys.readouterr().err.startswith('error: no model saved for round 7')
