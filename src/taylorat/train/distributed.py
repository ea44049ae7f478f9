"""Data-parallel training with ``torchrun``: process group, ranks and the few collectives we use.

``torchrun --nproc_per_node N -m taylorat train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; each rank then trains on its contiguous share of every global batch (the
batch size in the config is the global batch). Gradients are averaged by
DistributedDataParallel; each rank's loss is scaled by ``world · b_rank / B`` so that the average
is the mean over the global batch even when the last batch does not divide evenly. NCCL on GPUs,
gloo on CPUs.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..common import TayloratError, first_line
from ..common.processes import stop_with_parent


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The rank layout torchrun exported (a single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def setup(d: Dist, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device; the rank stops with its launcher."""
    if not d.enabled:
        return device
    stop_with_parent()  # torchrun starts ranks in sessions of their own: a killed launcher would not stop them
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        except RuntimeError as e:  # DistError included: a peer gone or out of reach, an endpoint not reached
            raise JoinFailed(d.rank, d.world, first_line(e)[:300]) from e
    return device


def shutdown(d: Dist) -> None:
    """Close the process group while Python is fully alive.

    Call it once nothing holds the group (drop the DDP wrapper first). Left to interpreter exit, gloo's worker
    threads free the tensors of the last collectives after Python has stopped them taking the GIL, and the rank
    aborts ("terminate called without an active exception") after a run that finished.
    """
    if d.enabled and dist.is_initialized():
        gc.collect()  # the trainer's reference cycles hold the DDP reducer, and through it the group
        dist.destroy_process_group()


def all_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum over ranks (in place; returns ``t``)."""
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def weighted_mean(t: torch.Tensor, weight: float, d: Dist) -> torch.Tensor:
    """``Σ_r weight_r · t_r`` over ranks, with ``weight_r = b_r / B`` (a global-batch mean)."""
    if not d.enabled:
        return t
    out = t * weight
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


#: what gloo and NCCL say when the process at the other end of a collective is gone
PEER_GONE = ("connection closed by peer", "connection reset by peer", "broken pipe", "connection refused",
             "remote process exited", "communicator was aborted", "timed out", "timeout")


class RankLost(TayloratError):
    """A collective failed because another rank stopped (killed, out of memory, its machine gone).

    The CLI exits with 75 (EX_TEMPFAIL: the same command, with ``--resume``, continues the run).
    """

    exit_code = 75

    def __init__(self, rank: int, world: int, cause: str):
        self.rank, self.world, self.cause = rank, world, cause
        super().__init__(f"rank {rank} of {world}: another rank stopped mid-run ({cause}); the run's checkpoints "
                         "are intact: find why that rank stopped, then run the same torchrun command with --resume")

    def __reduce__(self):
        return type(self), (self.rank, self.world, self.cause)


class JoinFailed(TayloratError):
    """This rank could not form the process group with the others (exit 75, as :class:`RankLost`)."""

    exit_code = 75

    def __init__(self, rank: int, world: int, cause: str):
        self.rank, self.world, self.cause = rank, world, cause
        super().__init__(f"rank {rank} of {world}: could not join the other ranks ({cause}); every node must run the "
                         "same torchrun command and reach the rendezvous endpoint (or MASTER_ADDR:MASTER_PORT); "
                         "the run's checkpoints are intact: run the same command with --resume")

    def __reduce__(self):
        return type(self), (self.rank, self.world, self.cause)


def peer_gone(err: BaseException) -> bool:
    """Whether ``err``, raised under torchrun, says a collective lost the process at its other end."""
    text = str(err).lower()
    return isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and any(m in text for m in PEER_GONE))


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank if it is True on any rank (used to agree on stopping)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_object(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
