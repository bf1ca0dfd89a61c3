"""A data-parallel PyTorch training job that checkpoints and resumes: copy it as a template.

It is written the way torchrun users write theirs: it reads its place in the job from the
environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and
calls ``init_process_group`` with ``nccl`` on GPUs or ``gloo`` on CPUs. firsthop sets those
variables for every rank, straight from the placement's rank table, so it runs as is:

    command: [python, examples/train_ddp_checkpoint.py, --steps, "200"]

or under torchrun with the static rendezvous, which keeps firsthop's node order (the default
c10d rendezvous would reorder hosts; see the README). With ``launch: per_host`` in the job spec
each agent starts one process per host, and torchrun starts the host's ranks::

    launch: per_host
    command: [bash, -c, 'exec torchrun --rdzv-backend=static
      --node-rank "$FIRSTHOP_NODE_RANK" --nnodes "$FIRSTHOP_NNODES"
      --nproc-per-node "$LOCAL_WORLD_SIZE" --master-addr "$MASTER_ADDR"
      --master-port "$MASTER_PORT" examples/train_ddp_checkpoint.py']

(``examples/jobs/train-ddp-2hosts.yaml`` and ``train-ddp-torchrun.yaml`` are both ways.)

Checkpoints: every ``--checkpoint-every`` steps rank 0 writes the model, the optimizer and the
step to ``$FIRSTHOP_CHECKPOINT_DIR/checkpoint.pt`` atomically (a temporary file, then a
rename), and tells the agent (``$FIRSTHOP_CHECKPOINT_REPORT``, when set) so the scheduler counts
the work as safe. At start every rank resumes from that file when it exists (after a failure
firsthop restarts the job with ``FIRSTHOP_RESTART_COUNT`` incremented and the same directory).
The directory must be visible to the rank-0 host of every attempt (a shared file system).

Checkpoint on request (the convention of Megatron-LM's ``--exit-signal-handler``, Lightning's
SLURM requeue and Slurm's ``--signal``): before a planned stop (preemption, a graceful cancel,
maintenance, a move) firsthop sends every rank the job's checkpoint signal, named in
``$FIRSTHOP_CHECKPOINT_SIGNAL`` (default ``SIGTERM``), and waits up to
``$FIRSTHOP_CHECKPOINT_GRACE_S`` seconds. The handler here only sets a flag; once per step the
ranks agree on it with one small all-reduce (a signal may reach the ranks during different
steps), then rank 0 saves and reports a checkpoint of the step just finished and every rank
exits 0. Under torchrun the signal reaches the workers because torchrun forwards SIGTERM to
them when it stops; with another signal, set ``TORCHELASTIC_SIGNALS_TO_HANDLE`` accordingly
or handle it in the launcher.

Training is deterministic: fixed seed, batches derived from (step, rank) alone, one intra-op
thread, gradients averaged by one all-reduce per parameter (:func:`average_gradients`, which
says why not DDP's buckets). So a run interrupted and resumed from a checkpoint ends with
exactly the parameters of an uninterrupted run. Rank 0 writes them to
``final.pt`` in the checkpoint directory.

Not part of firsthop itself: it imports only torch and the standard library.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from types import FrameType

import torch
import torch.distributed as dist
from torch import nn

CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps in all")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="steps per checkpoint")
    parser.add_argument("--batch", type=int, default=32, help="samples per rank and step")
    parser.add_argument("--width", type=int, default=64, help="hidden width of the model")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument(
        "--step-time",
        type=float,
        default=0.0,
        help="extra seconds per step, to stand in for real compute in demos",
    )
    parser.add_argument(
        "--checkpoint-dir",
        default=os.environ.get("FIRSTHOP_CHECKPOINT_DIR", "checkpoints"),
        help="default: $FIRSTHOP_CHECKPOINT_DIR",
    )
    return parser.parse_args(argv)


def make_model(width: int) -> nn.Module:
    """A small MLP regressor."""
    return nn.Sequential(
        nn.Linear(16, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1)
    )


def batch(step: int, rank: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of ``rank`` at ``step``: a function of those alone (no data-loader state)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + rank)
    x = torch.randn(size, 16, generator=gen)
    y = torch.sin(x.sum(dim=1, keepdim=True)) + 0.1 * torch.randn(size, 1, generator=gen)
    return x, y


def average_gradients(model: nn.Module, world: int) -> None:
    """All-reduce every gradient and divide by the world size, one parameter at a time.

    This is what DDP does, minus its bucketing: DDP rebuilds its buckets after the first
    iteration, so a run resumed from a checkpoint sums gradients in a different layout than
    the uninterrupted run did, and its parameters differ in the last bits. A fixed layout
    keeps a resumed run bit-identical.
    """
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad.div_(world)


def save_atomically(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename over ``path`` (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def report_checkpoint(step: int, path: Path) -> None:
    """Tell the firsthop agent a checkpoint is complete (``STEP PATH``, atomically)."""
    report = os.environ.get("FIRSTHOP_CHECKPOINT_REPORT")
    if not report:
        return
    target = Path(report)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(f"{step} {path}\n", encoding="utf-8")
    os.replace(tmp, target)


class StopRequest:
    """Set by the checkpoint signal; the ranks agree on it once per step."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> str:
        """Handle ``$FIRSTHOP_CHECKPOINT_SIGNAL`` (default SIGTERM); returns its name."""
        name = os.environ.get("FIRSTHOP_CHECKPOINT_SIGNAL", "SIGTERM")
        signal.signal(signal.Signals[name], self._handle)
        return name

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self.requested = True

    def agreed(self, device: torch.device) -> bool:
        """Whether any rank has been asked to stop (one all-reduce of one number)."""
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def save_checkpoint(
    model: nn.Module, optimizer: torch.optim.Optimizer, step: int, ckpt_path: Path
) -> None:
    """Rank 0: write the checkpoint of ``step`` and report it to the agent."""
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    save_atomically({**state, "step": step}, ckpt_path)
    report_checkpoint(step, ckpt_path)


def main(argv: list[str] | None = None) -> None:
    """Train, checkpointing and resuming (see the module docstring)."""
    args = parse_args(argv)
    stop = StopRequest()
    signal_name = stop.install()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo")  # MASTER_ADDR/PORT from the env

    torch.manual_seed(args.seed)
    model = make_model(args.width).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    ckpt_dir = Path(args.checkpoint_dir)
    ckpt_path = ckpt_dir / CHECKPOINT
    start = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
    restarts = os.environ.get("FIRSTHOP_RESTART_COUNT", "0")
    print(f"rank {rank}/{world} starting at step {start} (restart count {restarts})", flush=True)
    for tensor in model.state_dict().values():  # every rank starts from rank 0's weights
        dist.broadcast(tensor, src=0)
    loss_fn = nn.MSELoss()

    for step in range(start, args.steps):
        x, y = batch(step, rank, args.batch, args.seed)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x.to(device)), y.to(device))
        loss.backward()
        average_gradients(model, world)
        optimizer.step()
        if args.step_time > 0:
            time.sleep(args.step_time)
        done = step + 1
        if done < args.steps and stop.agreed(device):
            if rank == 0:
                save_checkpoint(model, optimizer, done, ckpt_path)
                print(f"step {done}: {signal_name} received, checkpoint written", flush=True)
            dist.barrier()
            dist.destroy_process_group()
            return
        if rank == 0 and (done % args.checkpoint_every == 0 or done == args.steps):
            save_checkpoint(model, optimizer, done, ckpt_path)
            print(f"step {done}: loss {loss.item():.6f}, checkpoint written", flush=True)

    if rank == 0:
        save_atomically(model.state_dict(), ckpt_dir / FINAL)
        print(f"done after {args.steps} steps", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
