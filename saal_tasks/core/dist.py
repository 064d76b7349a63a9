"""Distributed runs: initialisation from a launcher, sharding and ordered gathering.

Every rank runs the same loop with the same seeds, so every rank holds the same state; the
pool subset is scored in disjoint contiguous shards (one per rank) and the scores are gathered
in rank order, which restores the original order: the selection is the same whatever the
number of ranks. Only rank 0 writes files.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine import dist as mm_dist

from .errors import ConfigError

LAUNCHERS = ('none', 'pytorch')
#: What torchrun exports to every process it starts.
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def init_launcher(launcher: str) -> None:
    """Join the process group set up by ``torchrun`` (``launcher='pytorch'``).

    GPUs use NCCL through mmengine (one device per local rank); CPUs use gloo (mmengine's
    initialiser assumes CUDA, so it is called only when CUDA is there).
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher must be one of {', '.join(LAUNCHERS)} (pytorch = "
                          f'started by torchrun), got {launcher!r}')
    if launcher == 'none' or torch_dist.is_initialized():
        return
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        # Without them torch waits for a rendezvous that never comes, or fails deep inside.
        raise ConfigError(
            f"--launcher pytorch needs the environment torchrun sets ({', '.join(missing)} "
            'missing): start with torchrun --nproc_per_node=N tools/train_al.py CONFIG '
            '--launcher pytorch, or leave --launcher out for one process')
    if torch.cuda.is_available():
        mm_dist.init_dist('pytorch', backend='nccl')
    else:
        torch_dist.init_process_group(backend='gloo')


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a distributed run."""
    return mm_dist.get_dist_info()


def shard(ids: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The contiguous block of ``ids`` that ``rank`` handles (blocks in rank order)."""
    return np.array_split(np.asarray(ids), world_size)[rank]


def gather_in_rank_order(obj: Any) -> list[Any]:
    """Every rank's ``obj``, ordered by rank (a one-element list outside distributed runs)."""
    return mm_dist.all_gather_object(obj)


def barrier() -> None:
    """Wait for every rank (no-op outside distributed runs)."""
    mm_dist.barrier()


def average_gradients(parameters: Any) -> None:
    """Average the ``.grad`` of ``parameters`` over ranks, in place (no-op with one rank).

    For training loops that run several forward passes per step (e.g. a source and a target
    batch), which ``DistributedDataParallel``'s one-forward-one-backward contract does not fit.
    """
    if rank_and_world()[1] == 1:
        return
    for param in parameters:
        if not param.requires_grad:
            continue
        if param.grad is None:
            # Every rank must take part in every reduction: a parameter without a gradient
            # here (unused in this rank's forward) contributes zeros.
            param.grad = torch.zeros_like(param)
        mm_dist.all_reduce(param.grad, op='mean')


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``module``'s buffers (BatchNorm statistics) from rank ``src`` to every rank.

    Ranks that trained on different images hold different running statistics; after this,
    every rank scores with the same model (as ``DistributedDataParallel`` does each step).
    """
    if rank_and_world()[1] == 1:
        return
    for buffer in module.buffers():
        mm_dist.broadcast(buffer, src=src)
