"""bf16 on CPUs: where the hardware computes it natively, and with bounded matrix shapes.

Graph batches give every matrix multiplication a new row count (atoms or bonds in the batch).
On a CPU, oneDNN compiles a bf16 kernel per shape and keeps it in a primitive cache, so an
unbounded stream of row counts costs compile time and memory that grows with the library.
:func:`bucketed_rows` pads the rows entering each linear layer (``torch.nn.Linear`` and PyG's
``Linear``: all of the D-MPNN's matrix products; not the functional projections inside
attention or GRU cells) up to one of a few sizes per octave and cuts the output back. Rows of
a linear layer are independent, so the real rows are what they would be unpadded. Padding
happens only for bf16/fp16 work on a CPU; elsewhere (fp32, GPUs, ``torch.export`` tracing
outside autocast) the hooks pass inputs through untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from torch_geometric.nn.dense.linear import Linear as PygLinear

from molml.errors import DataError

BUCKETS_PER_OCTAVE = 16  # padding wastes at most 1/16 of the rows
MIN_BUCKET = 64

_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
REDUCED_PRECISIONS = {"bf16-mixed", "16-mixed", "bf16-true", "16-true"}  # Lightning's names
TRUE_PRECISIONS = ("bf16-true", "16-true", "64-true")  # weights cast, a PyG batch's fields not


def bucket_size(rows: int) -> int:
    """The smallest bucket holding ``rows``: a multiple of ``MIN_BUCKET`` and of
    ``2**(bits(rows) - 1) / BUCKETS_PER_OCTAVE``."""
    step = max(MIN_BUCKET, (1 << max(rows.bit_length() - 1, 0)) // BUCKETS_PER_OCTAVE)
    return -(-rows // step) * step


def add_row_buckets(model: nn.Module) -> list[RemovableHandle]:
    """Make every linear layer of ``model`` (``torch.nn.Linear`` and PyG's ``Linear``) pad its
    input's rows with zeros to :func:`bucket_size` and return only the real rows (gradients
    included); remove the returned hooks to undo."""
    handles = []
    for module in model.modules():
        if isinstance(module, nn.Linear | PygLinear) and not _has_row_buckets(module):
            handles.append(module.register_forward_pre_hook(_pad_rows))
            handles.append(module.register_forward_hook(_cut_rows))
    return handles


def _has_row_buckets(module: nn.Module) -> bool:
    return any(hook is _pad_rows for hook in module._forward_pre_hooks.values())


@contextmanager
def bucketed_rows(model: nn.Module) -> Iterator[None]:
    """:func:`add_row_buckets` while the context is active."""
    handles = add_row_buckets(model)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


_REDUCED_DTYPES = (torch.bfloat16, torch.float16)


def _reduced_cpu_work(x: Tensor) -> bool:
    """Whether ``x`` enters a bf16/fp16 matrix product on a CPU."""
    if x.device.type != "cpu":
        return False
    if x.dtype in _REDUCED_DTYPES:
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in _REDUCED_DTYPES


def _pad_rows(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    x = args[0]
    rows = x.shape[0] if x.dim() > 1 and _reduced_cpu_work(x) else 0
    module._molml_rows = rows  # read by _cut_rows right after this call
    padded = bucket_size(rows) if rows else rows
    if padded == rows:
        return None
    return (torch.cat([x, x.new_zeros(padded - rows, *x.shape[1:])]), *args[1:])


def _cut_rows(module: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
    rows = module._molml_rows
    return out[:rows] if rows and out.shape[0] != rows else out


def native_bf16(accelerator: str = "auto") -> bool:
    """Whether the device computes bf16 matrix products natively: a CUDA GPU with bf16, or an
    x86 CPU with AVX512-BF16 or AMX (read from ``/proc/cpuinfo``; elsewhere assumed not)."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if accelerator not in ("auto", "cpu"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return bool(_CPU_BF16_FLAGS.intersection(flags))


def default_inference_precision(accelerator: str = "auto") -> str:
    """``bf16-mixed`` where :func:`native_bf16`, else ``32-true`` (Lightning's names)."""
    return "bf16-mixed" if native_bf16(accelerator) else "32-true"


def check_precision(precision: object, option: str = "trainer.precision") -> None:
    """Refuse Lightning's ``*-true`` precisions: they cast the weights but not the fields of
    a PyG batch, so the first linear layer would meet float32 features."""
    if str(precision) in TRUE_PRECISIONS:
        raise DataError(
            f"{option} {precision} is not supported (the molecule batches stay float32); use "
            "32-true, bf16-mixed or 16-mixed"
        )
