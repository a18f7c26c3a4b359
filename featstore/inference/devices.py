"""What this machine offers a backbone run: GPUs, cores, memory, the largest input one image may
take, batch sizes and TensorRT's engine cache. Loads no CUDA runtime and no inference library."""

from __future__ import annotations

import ctypes
import os
import time
from functools import lru_cache
from pathlib import Path

from featstore.data.options import Size, hw

#: Batch size on the CPU (larger batches gain nothing there), the largest TensorRT batch
#: (engines are built for 1..TRT_MAX_BATCH), and the sizes tried on CUDA.
CPU_BATCH = 32
TRT_MAX_BATCH = 64
GPU_PROBE = (16, 32, 64, 128, 256, 512)


@lru_cache(maxsize=1)
def gpu_count() -> int:
    """Return how many NVIDIA GPUs the driver reports (0 without driver), loading no CUDA runtime."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def default_threads() -> int:
    """Return the number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


#: Channels assumed at full resolution when sizing the largest activation of one image (VGG's
#: first block has 64 at the input size; most networks have 32-64 at half of it).
_ACTIVATION_CHANNELS = 64
#: Bytes per activation value times the tensors alive at once (input, output, workspace).
_ACTIVATION_BYTES = 4 * 4
#: TensorFlow and ONNX Runtime kernels index tensors with 32-bit integers.
_MAX_TENSOR_VALUES = 2**31 - 1


def memory_bytes() -> int:
    """Physical memory of this machine in bytes (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def activation_bytes(size_px: int) -> int:
    """Bytes one image's largest activation takes at `size_px` (an upper estimate)."""
    return size_px * size_px * _ACTIVATION_CHANNELS * _ACTIVATION_BYTES


def max_input_size(memory: int | None = None) -> int:
    """Largest square input in px one image can take here: its largest activation must stay
    under 2**31 values and fit in `memory` bytes (default this machine's)."""
    memory = memory_bytes() if memory is None else memory
    limit = _MAX_TENSOR_VALUES / _ACTIVATION_CHANNELS
    if memory:
        limit = min(limit, memory / (_ACTIVATION_CHANNELS * _ACTIVATION_BYTES))
    return int(limit**0.5)


def choose_batch_size(session, size_px: Size, n_images: int | None = None) -> int:
    """Pick the batch size for `session`: `CPU_BATCH` on the CPU (fewer when a batch of large
    inputs would take over a quarter of the memory), `TRT_MAX_BATCH` with TensorRT, and on CUDA
    the fastest of 16..512 that fits, probed (doubling until out of memory or gaining < 5 %).
    Never more than `n_images` rounded up to a power of two."""
    import numpy as np

    if not session.on_gpu:
        fits = memory_bytes() // 4 // activation_bytes(max(hw(size_px))) if memory_bytes() else CPU_BATCH
        return int(max(1, min(CPU_BATCH, fits)))
    if session.device == "tensorrt":
        return TRT_MAX_BATCH
    cap = 1 << max(4, int(np.ceil(np.log2(max(n_images or GPU_PROBE[-1], 1)))))
    rng = np.random.default_rng(0)
    best, best_ips = GPU_PROBE[0], 0.0
    for b in (b for b in GPU_PROBE if b <= cap):
        x = rng.integers(0, 256, (b, *hw(size_px), 3), dtype=np.uint8)
        try:
            session.run(x)  # warm-up: allocations, algorithm search
            t0 = time.perf_counter()
            session.run(x)
            ips = b / (time.perf_counter() - t0)
        except Exception:  # noqa: BLE001 - out of memory surfaces as a runtime error
            break
        if ips < best_ips * 1.05:
            break
        best, best_ips = b, ips
    session.transfer_s = session.inference_s = 0.0
    return best


def engine_cached(trt_cache_dir: Path | None, prefix: str) -> bool:
    """True when a TensorRT engine named `prefix...` is already in the cache folder."""
    return trt_cache_dir is not None and any(trt_cache_dir.glob(f"{prefix}*.engine"))
