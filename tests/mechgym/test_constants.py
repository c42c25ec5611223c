"""constant_tensors: one build per key, plain tensors whatever the caller's mode, uncached inside transforms."""

from __future__ import annotations

import torch
from torch import Tensor

from mechgym.constants import constant_tensors

BUILDS: list[int] = []


@constant_tensors(maxsize=4)
def ramp(n: int) -> Tensor:
    BUILDS.append(n)
    return torch.arange(n, dtype=torch.float64)


def test_built_once_per_key_and_usable_by_autograd_after_inference_mode() -> None:
    ramp.cache_clear()  # type: ignore[attr-defined]
    BUILDS.clear()
    with torch.inference_mode():
        first = ramp(3)
    assert not first.is_inference() and not first.requires_grad
    assert ramp(3) is first and BUILDS == [3]
    weights = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (weights * first).sum().backward()  # first is saved for backward
    assert torch.equal(weights.grad, first)


def test_uncached_inside_a_func_transform() -> None:
    ramp.cache_clear()  # type: ignore[attr-defined]
    BUILDS.clear()
    x = torch.ones(5, dtype=torch.float64)
    grad = torch.func.grad(lambda x: (ramp(5) * x).sum())(x)  # made inside: wrapped for the transform, not kept
    assert torch.equal(grad, torch.arange(5, dtype=torch.float64))
    assert torch.equal(ramp(5), torch.arange(5, dtype=torch.float64))  # made again outside, then kept
    assert BUILDS == [5, 5]
