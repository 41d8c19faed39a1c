"""Devices: which one to run on (``choose_device``), what it is (``describe_device``), and out-of-memory
errors turned into one sentence (``oom_guard``). Re-exported by ``runtime.engine``."""
from __future__ import annotations

import contextlib
import os
import platform
from typing import Any, Iterator

import torch


class DeviceError(ValueError):
    """The requested device is not available or not understood."""


class DeviceMemoryError(DeviceError):
    """The device ran out of memory."""


# -- devices ----------------------------------------------------------------------------------------


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def choose_device(preference: str | torch.device | None = None) -> torch.device:
    """The device to run models on: ``None``/``"auto"`` picks cuda -> mps -> cpu; ``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ``"mps"`` ask for one and raise :class:`DeviceError` when unavailable."""
    if preference is None or str(preference).strip().lower() in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    text = str(preference).strip().lower()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"Unknown device {preference!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = "a CUDA-enabled" if torch.backends.cuda.is_built() else "a CPU-only"
            raise DeviceError(
                f"Device {preference!r} was asked for but no CUDA GPU is available ({built} PyTorch build); "
                "use --device cpu."
            )
        count = torch.cuda.device_count()
        index = 0 if dev.index is None else dev.index
        if index >= count:
            raise DeviceError(f"Device {preference!r} does not exist: this machine has {count} CUDA GPU(s).")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(f"Device {preference!r} was asked for but Apple MPS is not available; use --device cpu.")
        return torch.device("mps")
    raise DeviceError(f"Device type {dev.type!r} is not supported; use auto, cpu, cuda, cuda:N or mps.")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _total_ram() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _process_rss() -> int | None:
    try:
        with open("/proc/self/statm", encoding="utf-8") as f:
            return int(f.read().split()[1]) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def describe_device(device: str | torch.device | None = None) -> dict[str, Any]:
    """``name``, ``kind`` (cuda/mps/cpu), ``index``, ``memory_total`` and ``memory_used`` in bytes
    (CUDA: the GPU's memory and what torch allocated; MPS: RAM and torch's allocation; CPU: RAM and
    this process's resident size), plus ``memory_reserved`` on CUDA and ``cpu_count`` on CPU."""
    dev = torch.device(device) if device is not None else choose_device()
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {
            "name": torch.cuda.get_device_name(index),
            "kind": "cuda",
            "index": index,
            "memory_total": int(props.total_memory),
            "memory_used": int(torch.cuda.memory_allocated(index)),
            "memory_reserved": int(torch.cuda.memory_reserved(index)),
        }
    if dev.type == "mps":
        used = None
        with contextlib.suppress(Exception):
            used = int(torch.mps.current_allocated_memory())
        return {"name": "Apple MPS", "kind": "mps", "index": 0, "memory_total": _total_ram(), "memory_used": used}
    return {
        "name": _cpu_name(),
        "kind": "cpu",
        "index": None,
        "memory_total": _total_ram(),
        "memory_used": _process_rss(),
        "cpu_count": os.cpu_count(),
    }


def _is_oom(exc: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if oom_types and isinstance(exc, oom_types):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@contextlib.contextmanager
def oom_guard(what: str, device: torch.device | str | None = None) -> Iterator[None]:
    """Turn a device out-of-memory error inside the block into a :class:`DeviceMemoryError` that
    suggests what to do, after freeing the CUDA cache."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is an OOM
        if not _is_oom(exc):
            raise
        dev = torch.device(device) if device is not None else None
        if torch.cuda.is_available():
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
        where = f" on {dev}" if dev is not None else ""
        raise DeviceMemoryError(
            f"Out of memory while {what}{where}: unload other models, use a smaller input size or batch, "
            "or run on the CPU (--device cpu)."
        ) from None
