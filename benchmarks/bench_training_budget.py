"""Why the first digits protocol dipped at 30 labels: accuracy after training on 20 vs 30 labels.

The first Table 1 sweep on the digits (Adam 1e-3, 30 epochs, batch 32) fell from about 58 % at
20 labels to 10-32 % at 30 for every strategy. With fewer than 33 labels an epoch is one batch,
so 30 epochs are 30 Adam steps whatever the set size; this script trains the SmallCNN of that
protocol on 20 class-balanced labels and on the same 20 plus 10 random ones, for several epoch
counts, and prints the test accuracies and the final training loss (ln 10 = 2.30 at chance).

    python benchmarks/bench_training_budget.py [--seeds 3] [--epochs 30 100 300]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import saal_tasks.tasks.classification  # noqa: F401  (registers the task and data)
from saal_tasks.registry import TASKS

from machine import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--epochs', type=int, nargs='+', default=[30, 100, 300])
    parser.add_argument('--lr', type=float, default=1e-3)
    args = parser.parse_args()
    print(f'{cpu_name()}, {torch.get_num_threads()} threads; SmallCNN(width 16), Adam '
          f'{args.lr:g}, batch 32; accuracy % on the digits test split (final training loss)')
    print('| epochs | seed | 20 balanced labels | + 10 random labels |')
    print('| ---: | ---: | ---: | ---: |')
    for epochs in args.epochs:
        task = TASKS.build(dict(
            type='ClassificationTask', dataset=dict(type='DigitsData'),
            model=dict(type='SmallCNN', width=16), optimizer=dict(type='Adam', lr=args.lr),
            epochs=epochs, batch_size=32, eval_batch_size=512, log_interval=10**9))
        labels = task.data.train_y.numpy()
        rng = np.random.default_rng(0)
        for seed in range(args.seeds):
            balanced = np.sort(np.concatenate(
                [rng.choice(np.flatnonzero(labels == c), 2, replace=False) for c in range(10)]))
            extra = rng.choice(np.setdiff1d(np.arange(len(labels)), balanced), 10, replace=False)
            cells = []
            for labeled in (balanced, np.sort(np.concatenate([balanced, extra]))):
                task.set_annotations(task.ground_truth(labeled))
                model = task.train(task.build_model(seed), labeled, seed)
                x = task.data.normalize(task.data.train_x[labeled])
                with torch.no_grad():
                    loss = torch.nn.functional.cross_entropy(
                        model(x), task.data.train_y[labeled])
                cells.append(f'{task.evaluate(model)["accuracy"]:.1f} ({float(loss):.2f})')
            print(f'| {epochs} | {seed} | {cells[0]} | {cells[1]} |', flush=True)


if __name__ == '__main__':
    main()
