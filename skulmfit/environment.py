"""The machine a model runs on: which device and precision a fit or a prediction uses, torch's
threads, and a description of the machine for the records of benchmarks and pretraining runs."""
from __future__ import annotations

import contextlib
import os
import platform
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from sklearn.utils._param_validation import InvalidParameterError

from . import __version__
from .training import cpu_computes_bf16


def resolve_device(device: str | torch.device, *, fitted: bool = False) -> torch.device:
    """The torch device an estimator's ``device`` parameter names.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    fitted : bool, default=False
        Whether a fitted model is to predict: an unavailable CUDA device is then a warning and the
        CPU is used, where fitting refuses it.

    Returns
    -------
    torch.device

    Raises
    ------
    InvalidParameterError
        If ``device`` is no torch device, or a device other than the CPU and CUDA.
    ValueError
        If fitting on a CUDA device this machine does not have.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # A malformed device is an invalid parameter, as sklearn's own checks report it (a ValueError too).
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidParameterError(
            f"device={device!r} is not a valid torch device ('auto', 'cpu', 'cuda', 'cuda:1')") from None
    if resolved.type == "cuda":
        index = resolved.index or 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            message = f"device={device!r} is not available on this machine"
            if not fitted:
                raise ValueError(message + "; use device='auto' or 'cpu'")
            warnings.warn(message + "; predicting on the CPU", UserWarning, stacklevel=3)
            return torch.device("cpu")
    elif resolved.type != "cpu":
        raise InvalidParameterError(f"device={device!r}: only 'cpu' and CUDA devices are supported")
    return resolved


def resolve_precision(precision: str, device: torch.device, *, fitting: bool = True) -> str:
    """The precision (``"bf16"`` or ``"fp32"``) an estimator's ``precision`` parameter gives on ``device``.

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16"}
        ``"auto"`` is bf16 where the hardware computes it natively (GPUs that support it, CPUs with
        AVX512-BF16 or AMX), fp32 elsewhere.
    device : torch.device
    fitting : bool, default=True
        An explicit ``"bf16"`` where the hardware lacks it is refused when fitting (the CPU's LSTM
        kernels have no bf16 form there, and emulation would be slower than fp32); a model fitted
        with it elsewhere predicts in fp32, with a warning.

    Returns
    -------
    {"bf16", "fp32"}

    Raises
    ------
    ValueError
        If fitting with ``precision="bf16"`` on hardware without bfloat16.
    """
    if precision == "fp32":
        return "fp32"
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_computes_bf16()
    if precision == "auto" or native:
        return "bf16" if native else "fp32"
    hardware = ("this GPU has no bfloat16 support" if device.type == "cuda"
                else "this CPU has neither AVX512-BF16 nor AMX, so it cannot run the LSTM in bfloat16")
    if fitting:
        raise ValueError(f"precision='bf16': {hardware}; use precision='auto' (bf16 wherever the hardware "
                         "has it, fp32 elsewhere) or precision='fp32'")
    warnings.warn(f"precision='bf16': {hardware}; predicting in fp32", UserWarning, stacklevel=4)
    return "fp32"


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block, then restored.

    Parameters
    ----------
    n : int
        Threads inside the block.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine_description() -> dict:
    """The CPU, cores, torch threads, GPU and versions, as benchmarks and pretraining runs record them.

    Returns
    -------
    dict
        ``cpu``, ``cores``, ``torch_threads``, ``torch``, ``python``, ``skulmfit``, and ``gpu`` where
        CUDA is available.
    """
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "skulmfit": __version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
