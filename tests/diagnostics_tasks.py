"""Tiny float64 task adapters with known answers for the diagnostics and theory tests."""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saal_tasks.core.task import BaseTask


class TanhMLP(nn.Module):
    """A smooth two-layer network (tanh), so Taylor expansions in the weights hold."""

    def __init__(self, d_in: int = 4, hidden: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fc1(x)))


class TensorTask(BaseTask):
    """Classification on in-memory tensors: ``x [N, D]``, labels ``y [N]``, ids ``0..N-1``.

    Args:
        num_samples: Pool size.
        seed: Seed of the data and of the model.
        structured: Yield inputs as a dict ``{'x': tensor}`` (cannot be vmapped), to test
            the one-sample-at-a-time path.
    """

    def __init__(self, num_samples: int = 24, seed: int = 0, structured: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(num_samples, 4, generator=g, dtype=torch.float64)
        w = torch.randn(4, 3, generator=g, dtype=torch.float64)
        # Labels mostly follow a linear rule, with some noise so that losses differ.
        logits = self.x @ w + 0.8 * torch.randn(num_samples, 3, generator=g, dtype=torch.float64)
        self.y = logits.argmax(dim=1)
        self.seed = seed
        self.structured = structured

    def sample_ids(self) -> np.ndarray:
        return np.arange(len(self.y), dtype=np.int64)

    def ground_truth(self, sample_ids: np.ndarray) -> dict[int, Any]:
        return {int(i): int(self.y[int(i)]) for i in sample_ids}

    def set_annotations(self, annotations: dict[int, Any]) -> None:
        pass

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return TanhMLP().double()

    def train(self, model: nn.Module, labeled_ids: np.ndarray, seed: int) -> nn.Module:
        """A few full-batch Adam steps on the labeled samples (deterministic)."""
        idx = torch.as_tensor(np.asarray(labeled_ids, dtype=np.int64))
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(60):
            opt.zero_grad()
            F.cross_entropy(model(self.x[idx]), self.y[idx]).backward()
            opt.step()
        return model.eval()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {'accuracy': float((model(self.x).argmax(1) == self.y).double().mean())}

    def _wrap(self, x: torch.Tensor) -> Any:
        return {'x': x} if self.structured else x

    @staticmethod
    def _unwrap(inputs: Any) -> torch.Tensor:
        return inputs['x'] if isinstance(inputs, dict) else inputs

    def pool_batches(self, sample_ids: np.ndarray,
                     batch_size: int) -> Iterator[tuple[np.ndarray, Any]]:
        ids = np.asarray(sample_ids, dtype=np.int64)
        for s in range(0, len(ids), batch_size):
            chunk = ids[s:s + batch_size]
            yield chunk, self._wrap(self.x[torch.as_tensor(chunk)])

    def pseudo_label(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        return model(self._unwrap(inputs)).argmax(dim=1)

    def loss_per_unit(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        return F.cross_entropy(model(self._unwrap(inputs)), targets, reduction='none')

    def batch_size_of(self, inputs: Any) -> int:
        return self._unwrap(inputs).shape[0]


class QuadraticModel(nn.Module):
    """One weight vector ``w [D]``; the task's loss is an explicit quadratic in it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim, dtype=torch.float64))


class QuadraticTask(BaseTask):
    """``l_i(w) = ½ wᵀA_i w + b_iᵀw``: Hessian ``A_i`` and gradient ``A_i w + b_i`` exactly.

    Sample ``i``'s input is ``(A_i, b_i)`` stacked as ``[D, D + 1]``; its Hessian's
    eigenvalues are chosen (``eigenvalues[i]``) so the tests know λ₁ and λ_min.

    Args:
        eigenvalues: ``[N, D]`` eigenvalues of each sample's Hessian.
        seed: Seed of the eigenvectors, ``b`` and ``w``.
    """

    def __init__(self, eigenvalues: np.ndarray, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        eig = torch.as_tensor(eigenvalues, dtype=torch.float64)
        n, d = eig.shape
        q, _ = torch.linalg.qr(torch.randn(n, d, d, generator=g, dtype=torch.float64))
        self.A = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
        self.b = torch.randn(n, d, generator=g, dtype=torch.float64)
        self.w0 = torch.randn(d, generator=g, dtype=torch.float64)
        self.dim = d

    def sample_ids(self) -> np.ndarray:
        return np.arange(self.A.shape[0], dtype=np.int64)

    def ground_truth(self, sample_ids: np.ndarray) -> dict[int, Any]:
        return {int(i): 0 for i in sample_ids}

    def set_annotations(self, annotations: dict[int, Any]) -> None:
        pass

    def build_model(self, seed: int) -> nn.Module:
        model = QuadraticModel(self.dim)
        with torch.no_grad():
            model.w.copy_(self.w0)
        return model

    def train(self, model: nn.Module, labeled_ids: np.ndarray, seed: int) -> nn.Module:
        return model

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {}

    def pool_batches(self, sample_ids, batch_size):
        ids = np.asarray(sample_ids, dtype=np.int64)
        for s in range(0, len(ids), batch_size):
            chunk = torch.as_tensor(ids[s:s + batch_size])
            yield ids[s:s + batch_size], torch.cat([self.A[chunk], self.b[chunk, :, None]], 2)

    def pseudo_label(self, model, inputs):
        return torch.zeros(inputs.shape[0], dtype=torch.long)

    def loss_per_unit(self, model, inputs, targets):
        a, b = inputs[..., :-1], inputs[..., -1]
        w = model.w
        return 0.5 * torch.einsum('i,bij,j->b', w, a, w) + b @ w
