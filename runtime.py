"""What training, evaluation, sampling and the benchmarks share, below all of them.

Seeds. Every random draw of a run is a function of (seed, stream, index) alone, through numpy's
SeedSequence: numpy generators are generator(seed, stream, index...) and torch's global generator is seeded
with noise_seed(seed, index) (stream NOISE_STREAM) before each batch's noise is drawn (training step k,
evaluation batch k, sample.py's rendering k). So the data order, the views and the noise do not depend
on the number of workers or processes, and a resumed run repeats the uninterrupted one: on a CPU to
the bit; on CUDA it takes the same data and noise, but some kernels (grid_sample's backward, which adds
atomically; cuDNN's choice of algorithm) round differently from run to run, as in any two CUDA runs.

Also: UsageError (a command-line value that cannot work, in one sentence), the device from a flag,
glibc's handling of freed memory (process-level set-up), bf16 autocast, and the split of a loader batch
into context and query.
"""

import numpy as np
import torch

# the streams under one seed
ORDER_STREAM = 0     # training: the order of the scenes in each epoch (gqn_dataset.ContextBatchSampler)
BATCH_STREAM = 1     # training: each batch's context count and views
EVAL_STREAM = 2      # evaluation: each scene's context and query views (gqn_dataset.FixedContextSampler)
SCENE_STREAM = 3     # sample.py --random: which scenes
NOISE_STREAM = 4     # the model's noise (torch)


class UsageError(Exception):
    """A command-line value that does not fit the checkpoint, the data or the machine, said in one
    sentence."""


def generator(seed, stream, *index):
    """The numpy generator of draw `index` of `stream` under `seed`."""
    return np.random.default_rng([seed, stream, *index])


def noise_seed(seed, index):
    """The torch seed of batch `index`'s noise under `seed` (63 bits, from the same SeedSequence as
    generator)."""
    words = np.random.SeedSequence([seed, NOISE_STREAM, index]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def pick_device(name):
    """A --device value -> torch.device; None picks cuda when there is one."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name} is not a device; pass cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this machine has no CUDA GPU; pass --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UsageError(f"--device {name}: this machine has {count} CUDA GPU(s); pass cuda:0 to "
                         f"cuda:{count - 1}")
    return device


def keep_freed_memory():
    """Ask glibc to serve every block from its heap and keep freed memory there: a process-wide setting,
    made once at start.

    By default blocks over 32 MiB (gradients, optimizer buffers, large activations) are mapped fresh
    and handed back to the system when freed, so every training step page-faults gigabytes in again
    (on a CPU a sizeable share of the default model's step: benchmarks/README.md). Elsewhere than glibc:
    nothing."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
        libc.mallopt(-4, 0)        # M_MMAP_MAX = 0: no block gets its own mapping
    except (OSError, AttributeError):
        pass


def flush_denormals():
    """Have the CPU treat numbers too small for a float's normal range (denormals) as zero: a process-wide
    setting, made once at start. As a model trains, saturated sigmoids and vanishing gradients produce
    them, and x86 CPUs compute on them many times slower than on other numbers, so steps grow slower as
    training goes on. Changes no result beyond 1e-38. Where the CPU cannot: nothing."""
    torch.set_flush_denormal(True)


def autocast(device, dtype):
    """bfloat16 autocast for dtype "bfloat16", else a context that changes nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=(dtype == "bfloat16"))


def split_batch(frames, viewpoints, device):
    """(B, M+1, 3, H, W) frames (uint8, or floats in [0, 1]), (B, M+1, 7) viewpoints -> x, v, x_q, v_q on
    device (last view = query)."""
    frames = frames.to(device, non_blocking=True)
    viewpoints = viewpoints.to(device, non_blocking=True).float()
    images = frames.float().div_(255) if frames.dtype == torch.uint8 else frames.float()
    return images[:, :-1], viewpoints[:, :-1], images[:, -1], viewpoints[:, -1]
