"""Training on several processes or GPUs: torchrun's processes (`Distributed`), the noise each process or
GPU draws of a global batch (`GlobalBatchNoise`), and nn.DataParallel's rows and bfloat16 replica.
"""

import atexit
import collections
import os

import torch
from torch import nn

from runtime import UsageError


class Distributed:
    """torchrun's environment: rank, world size and this process's device; device_ids: --device_ids
    (more than one GPU in one process: nn.DataParallel)."""

    def __init__(self, device_ids):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        self.device_ids = list(device_ids)
        if torch.cuda.is_available():
            index = self.local_rank if self.enabled else device_ids[0]
            count = torch.cuda.device_count()
            wanted = [index] if self.enabled else device_ids
            if any(not 0 <= i < count for i in wanted):
                what = (f"process {self.local_rank} of this machine needs GPU {index}" if self.enabled
                        else f"--device_ids {' '.join(map(str, device_ids))} names a GPU it does not have")
                fix = ("start at most that many processes per machine (torchrun --nproc_per_node)"
                       if self.enabled else f"pass ids between 0 and {count - 1}")
                raise UsageError(f"this machine has {count} CUDA GPU(s), numbered 0 to {count - 1}, and "
                                 f"{what}; {fix}")
            self.device = torch.device("cuda", index)
            torch.cuda.set_device(self.device)
        else:
            if not self.enabled and list(device_ids) != [0]:
                ids = " ".join(map(str, device_ids))
                raise UsageError(f"this machine has no CUDA GPU, and --device_ids {ids} asks for GPUs; leave "
                                 f"--device_ids out to train on the CPU")
            self.device = torch.device("cpu")
        if self.enabled:
            # torch.distributed.nn.functional takes the default process group as its functions' default
            # argument when it is imported, and DistributedDataParallel's constructor imports it (through
            # torch._dynamo). Imported after init_process_group, it would keep the group, and gloo's
            # worker threads, alive into the interpreter's shutdown (see `collective`). Imported first, it
            # holds no group: the group ends, and its threads with it, once close() has run and its last
            # holder, the DDP wrapper, is freed.
            from torch.distributed.nn import functional  # noqa: F401
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0
        self._noise = {}

    @property
    def data_parallel(self):
        """Whether the model runs as nn.DataParallel over several GPUs of this one process."""
        return not self.enabled and self.device.type == "cuda" and len(self.device_ids) > 1

    def batch_noise(self, batch_size):
        """The model's noise (GQN.forward's `noise`) for a global batch of `batch_size` scenes: under DDP
        this process's rows of it, under DataParallel each GPU's; None (torch's own draws) where one model
        trains on the whole batch. The same object each call, so a compiled model sees one argument."""
        if batch_size not in self._noise:
            if self.enabled:
                share = batch_size // self.world_size
                rows = (self.rank * share, (self.rank + 1) * share, batch_size)
            elif self.data_parallel:
                rows = data_parallel_rows(self.device_ids, batch_size)
            else:
                rows = None
            self._noise[batch_size] = None if rows is None else GlobalBatchNoise(rows)
        return self._noise[batch_size]

    def any(self, *flags):
        """Per flag, whether any process has it set (one all_reduce), so that every process decides alike:
        a process that stopped or skipped a step alone would wait in a collective the others never reach."""
        if not self.enabled:
            return [bool(f) for f in flags]
        t = all_reduce_sum(torch.tensor([float(bool(f)) for f in flags], device=self.device))
        return [value > 0 for value in t.tolist()]

    def shared(self, value):
        """Process 0's whole number, on every process."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        collective(torch.distributed.broadcast, t, 0)
        return int(t.item())

    def gathered(self, value):
        """Every process's `value` (a one-element tensor on this process's device), as floats in rank
        order."""
        outputs = [torch.empty_like(value) for _ in range(self.world_size)]
        collective(torch.distributed.all_gather, outputs, value)
        return [t.item() for t in outputs]

    def close(self):
        """Leave the process group (its threads end when its last holder, the DDP wrapper, is freed)."""
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# The handles of this process's latest collectives (see `collective`).
_LATEST = collections.deque(maxlen=64)


@atexit.register
def release_collectives():
    """Drop the latest collectives' handles: at the process's exit, once the process group has ended, while
    the interpreter is whole. They hold the group's connections (gloo's transport and its thread)."""
    _LATEST.clear()


def collective(run, *args):
    """Run a collective of torch.distributed, run(*args, async_op=True), and wait for it to finish.

    The backend's threads let go of a finished collective a moment after it has returned here. If theirs is
    the last reference to its tensors, freeing them takes the interpreter from that thread: during the
    interpreter's shutdown that aborts the process ("terminate called without an active exception"), and
    while the process group is destroyed, which holds the interpreter and waits for those threads, it
    hangs. This thread keeps the handles of the latest 64 collectives until the process exits
    (release_collectives): the last reference to their tensors is its own, and older ones the threads have
    long let go of."""
    work = run(*args, async_op=True)
    work.wait()
    _LATEST.append(work)


def all_reduce_sum(values):
    """Sum the tensor `values` over the processes, in place."""
    collective(torch.distributed.all_reduce, values)
    return values


class GlobalBatchNoise:
    """eps ~ N(0, 1) for the model's z under data parallelism (a callable: noise(like) -> eps shaped like
    `like`, (B, z, n, n)): it draws the whole global batch's noise and keeps this process's rows, so N
    processes sample exactly what one process would for the same global batch.

    rows: (start, stop, global_batch) for this process; or, under nn.DataParallel, a dict GPU index ->
    rows, picked by `like`'s device (its replicas share one seed, and would otherwise draw the same noise
    for every GPU's part of the batch). A device without rows, or a part that would run past the global
    batch, draws its own noise."""

    def __init__(self, rows):
        self.rows = rows

    def __call__(self, like):
        rows = self.rows.get(like.device.index) if isinstance(self.rows, dict) else self.rows
        n = like.shape[0]   # a part that lost bad scenes is shorter: it still takes rows of its own
        if rows is None or rows[0] + n > rows[2]:
            return torch.randn_like(like)
        start, _, total = rows
        return torch.randn((total,) + like.shape[1:], device=like.device, dtype=like.dtype)[start:start + n]


def data_parallel_rows(device_ids, batch_size):
    """GPU index -> (start, stop, batch_size): the rows of the batch that nn.DataParallel gives each
    GPU's replica (it splits a batch as tensor.chunk does, into parts of ceil(B / GPUs))."""
    part = -(-batch_size // len(device_ids))
    return {gpu: (k * part, min(batch_size, (k + 1) * part), batch_size)
            for k, gpu in enumerate(device_ids) if k * part < batch_size}


class BFloat16Replica(nn.Module):
    """The model, its forward under bfloat16 autocast, for nn.DataParallel: it runs each GPU's replica in
    a thread of its own and enters autocast there again without the dtype, which on CUDA is float16
    (with no gradient scaling: gradients can underflow); entered once more in the replica, bfloat16 holds."""

    def __init__(self, module, device_type):
        super().__init__()
        self.module, self.device_type = module, device_type

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.module(*args, **kwargs)
