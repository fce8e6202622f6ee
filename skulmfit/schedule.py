"""The learning-rate schedules of ULMFiT: slanted triangular rates, discriminative rates and the
stages of gradual unfreezing (paper §3.2–3.3)."""
from __future__ import annotations

import math

import torch
from torch import nn

LR_DECAY_PER_GROUP = 2.6  # paper §3.2: eta^(l-1) = eta^l / 2.6


def slanted_triangular(step: int, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """Multiplier in [1/ratio, 1] of the peak learning rate at ``step`` (0-based) of ``total_steps``.

    Paper eq. 3: a linear rise for the first ``cut_frac`` of the steps, then a linear decay;
    the multiplier is ``(1 + p * (ratio - 1)) / ratio``. The decay runs over the remaining
    ``total_steps - cut`` steps, which is the paper's ``cut * (1 / cut_frac - 1)`` whenever
    ``total_steps * cut_frac`` is whole, and still ends at ``1 / ratio`` when it is not.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    cut = max(1, math.floor(total_steps * cut_frac))
    if step < cut:
        p = step / cut
    else:
        p = 1.0 - (step - cut) / max(1, total_steps - cut)
    p = min(max(p, 0.0), 1.0)
    return (1.0 + p * (ratio - 1.0)) / ratio


def discriminative_lrs(top_lr: float, n_groups: int, factor: float = LR_DECAY_PER_GROUP) -> list[float]:
    """Bottom-up learning rates: the top group gets ``top_lr``, each lower one ``factor`` times less."""
    return [top_lr / factor ** (n_groups - 1 - i) for i in range(n_groups)]


def unfreezing_stages(n_groups: int, final_epochs: int) -> list[tuple[int, int]]:
    """Gradual unfreezing as ``(number of trainable top groups, epochs)`` pairs.

    The top group alone for one epoch, then one more group per epoch, then every group for
    ``final_epochs`` epochs (paper §3.3).
    """
    stages = [(n, 1) for n in range(1, n_groups)]
    if final_epochs > 0:
        stages.append((n_groups, final_epochs))
    return stages


def param_groups(groups: list[list[nn.Module]], lrs: list[float]) -> list[dict]:
    """Optimizer parameter groups, one per layer group; ``initial_lr`` is the peak rate."""
    result = []
    for modules, lr in zip(groups, lrs, strict=True):
        seen: dict[int, nn.Parameter] = {}
        for module in modules:
            for param in module.parameters():
                seen.setdefault(id(param), param)
        result.append({"params": list(seen.values()), "lr": lr, "initial_lr": lr})
    return _drop_shared(result)


def _drop_shared(groups: list[dict]) -> list[dict]:
    # A tied decoder shares the embedding weight: an optimizer must see each tensor once.
    seen: set[int] = set()
    for group in groups:
        group["params"] = [p for p in group["params"] if not (id(p) in seen or seen.add(id(p)))]
    return groups


def freeze_to(groups: list[list[nn.Module]], n_trainable: int) -> None:
    """Make only the top ``n_trainable`` layer groups trainable."""
    boundary = len(groups) - n_trainable
    trainable = {id(p) for modules in groups[boundary:] for m in modules for p in m.parameters()}
    for modules in groups:
        for module in modules:
            for param in module.parameters():
                param.requires_grad_(id(param) in trainable)


def set_stlr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, cut_frac: float, ratio: float,
             scale: float = 1.0) -> None:
    """Sets every group's rate to its peak (``initial_lr``) times the STLR multiplier and ``scale``."""
    multiplier = slanted_triangular(step, total_steps, cut_frac, ratio) * scale
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier
