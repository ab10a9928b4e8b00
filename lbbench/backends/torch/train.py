"""The PyTorch worker: ``python -m lbbench.backends.torch.train RUN_DIR`` on every rank.

The run itself - resume, MLLOG, epochs, evaluation, checkpoints, summary - is the shared
driver's (lbbench/worker/driver.py); this module gives it the PyTorch parts: device and speed options
(perf.py), lbbench's ResNet, the method's step strategy and optimizer, the DALI loaders, BN
statistics averaged over ranks before evaluations and checkpoints, and torch.save files.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch

from lbbench.backends.torch.loop import grouped_allreduce
from lbbench.spec import RunSpec


class TorchWorker:
    def __init__(self, spec: RunSpec, hvd, device, ckpt: dict | None, progress, metrics):
        from lbbench.backends.torch import perf
        from lbbench.backends.torch.data import eval_batches, train_loader
        from lbbench.backends.torch.flops import forward_gflop_per_image
        from lbbench.backends.torch.loop import Loop
        from lbbench.backends.torch.model import build_model
        from lbbench.backends.torch.steps import build_method
        from lbbench.worker.roofline import TRAIN_FACTOR

        self.spec, self.hvd = spec, hvd
        rank, size = hvd.rank(), hvd.size()
        torch.manual_seed(spec.seed)
        span = spec.bn_span if spec.bn_span < spec.local_batch else None
        model, forward = perf.prepare_model(build_model(spec.model, spec.data.classes, bn_span=span), spec.perf, device)
        method = build_method(spec, model, rank, size)
        if ckpt:
            model.load_state_dict(ckpt["model"])
            method.optimizer.load_state_dict(ckpt["optimizer"])
            method.load_state_dict(ckpt["method"])
            torch.set_rng_state(ckpt["rng"])
            if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        else:
            hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        gpu = device.index if spec.perf.dali_device == "gpu" else None
        self.model, self.method, self.torch_device = model, method, device
        self.loop = Loop(
            spec,
            model,
            method.optimizer,
            train_loader(spec, rank, epoch=progress.epoch + 1, gpu=gpu),
            hvd,
            rank,
            metrics,
            device=device,
            forward=forward,
        )
        self.eval_batches = eval_batches(spec, rank, size, gpu=gpu)
        self.device = perf.device_name(device)
        # Roofline (lbbench/roofline.py): counted on the model itself, one image, eval mode.
        self.train_gflop = TRAIN_FACTOR * forward_gflop_per_image(model, spec.data.image_size, device)

    def set_lr(self, lr: float) -> None:
        for g in self.method.optimizer.param_groups:
            g["lr"] = lr

    def train_mode(self) -> None:
        self.model.train()

    @torch.no_grad()
    def evaluate(self) -> float:
        sync_bn_buffers(self.model, self.hvd)  # every rank evaluates the same model
        self.model.eval()
        loop, correct, count = self.loop, 0, 0
        for batch in self.eval_batches():
            x, y = loop._to_device(batch)
            with loop.autocast():
                logits = loop.forward(x)
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
        tally = grouped_allreduce(self.hvd, [torch.tensor([correct, count])], "lbbench.eval", op=self.hvd.Sum)[0]
        correct, count = (int(v) for v in tally)
        if count != self.spec.data.eval_samples:
            raise RuntimeError(f"evaluated {count} samples, expected {self.spec.data.eval_samples}")
        return correct / count

    def checkpoint_payload(self) -> dict:
        sync_bn_buffers(self.model, self.hvd)  # so rank 0's copy is every rank's, as after an evaluation
        method_state = self.method.state_dict()  # collective for some methods (K-FAC inverses)
        return dict(
            model=self.model.state_dict(),
            optimizer=self.method.optimizer.state_dict(),
            method=method_state,
            rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(self.torch_device) if self.torch_device.type == "cuda" else None,
        )

    def digest(self) -> str:
        return param_digest(self.model)

    def save_final(self, run_dir: Path) -> None:
        """CPU copies: readable on a login node without GPUs."""
        from lbbench.backends.torch.checkpoint import to_cpu

        torch.save(to_cpu(self.model.state_dict()), run_dir / "final.pt")
        if hasattr(self.method, "pre"):
            torch.save(to_cpu(self.method.pre.state()), run_dir / "kfac_factors.pt")


def main(run_dirs: list[Path]) -> int:
    """Trains the run dir(s): several are a warm launch (lbbench/worker/pool.py) - one Horovod
    world and one set of imports, a fresh model, optimizer, pipelines and seeds per cell."""
    import horovod.torch as hvd

    from lbbench.backends.dali_pipeline import use_threads
    from lbbench.backends.torch import checkpoint, perf
    from lbbench.worker import devices, driver, pool

    hvd.init()
    if devices.refused(hvd, torch.cuda.device_count(), "PyTorch"):
        return 2
    device = perf.pick_device(hvd.local_rank())
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // hvd.local_size()))
    use_threads(hvd.local_size())  # DALI's threads: this worker's share of the node's CPUs

    def cell(run_dir: Path) -> int:
        spec = RunSpec.load(run_dir / "run.yaml")
        if hvd.size() != spec.np:
            raise SystemExit(f"run {spec.run_id} needs np={spec.np} Horovod processes, got {hvd.size()}")
        try:
            perf.check(spec, device)
        except perf.PerfOptionError as e:
            print(f"lbbench: {e}", file=sys.stderr, flush=True)
            return 2
        try:
            return driver.run(
                spec,
                run_dir,
                hvd,
                checkpoint,
                lambda ckpt, progress, metrics: TorchWorker(spec, hvd, device, ckpt, progress, metrics),
            )
        finally:
            if spec.perf.compile:  # no compiled graph or guard outlives its cell
                torch._dynamo.reset()

    return pool.run_cells(run_dirs, hvd.rank() == 0, cell)


def param_digest(model) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def sync_bn_buffers(model, hvd) -> None:
    """BN running statistics differ per rank (each saw its own micro-batches): average them."""
    buffers = [b for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var"))]
    for b, avg in zip(buffers, grouped_allreduce(hvd, buffers, "lbbench.bn", op=hvd.Average)):
        b.copy_(avg)


if __name__ == "__main__":
    sys.exit(main([Path(a) for a in sys.argv[1:]]))
