"""One rank of the overlapped-allreduce check (run by tests/backends/torch/test_overlap.py under
lbbench's Gloo launcher, 2 ranks): a small network's gradients after 2 accumulated micro-batches,
averaged once by one grouped allreduce after the backward pass and once by the overlapped
buckets (tiny buckets, so several start during the backward pass). Prints both as hex digests
of the float64 bytes, and the number of buckets started before the backward pass ended. Then
the parameters as an optimizer with a no-decay group hands them over (weights first, biases
after), put in the model's order the way the loop does: prints the order the buckets started in
(the index order when the buckets follow the backward pass). And whether a reader of .grad
between the backward pass and finish() still sees this rank's own gradient: not with the
in-place sums, yes with keep_local (what diagnostics ask for)."""

from __future__ import annotations

import hashlib
import time

import horovod.torch as hvd
import torch

from lbbench.backends.torch.loop import OverlappedAllreduce, model_order

hvd.init()
torch.manual_seed(0)  # the same network on both ranks; different data per rank
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3),
    torch.nn.ReLU(),
    torch.nn.Conv2d(8, 8, 3),
    torch.nn.Flatten(),
    torch.nn.Linear(8 * 4 * 4, 5),
).double()
unused = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))  # never gets a gradient
params = [*net.parameters(), unused]
gen = torch.Generator().manual_seed(100 + hvd.rank())
batches = [
    (torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64), torch.randint(0, 5, (4,), generator=gen))
    for _ in range(2)
]
average = dict(op=hvd.Average)


def digest() -> str:
    return hashlib.sha256(b"".join(p.grad.numpy().tobytes() for p in params if p.grad is not None)).hexdigest()


def grads(overlap: OverlappedAllreduce | None, keep_local: bool = False) -> tuple[str, list[int], str]:
    """The averaged gradients' digest and loss, the buckets started before finish(), and the
    digest of .grad as a reader between the backward pass and finish() sees it."""
    for p in params:
        p.grad = None
    early: list[int] = []
    for a, (x, y) in enumerate(batches):
        if overlap is not None and a == len(batches) - 1:
            overlap.arm(keep_local)
        (torch.nn.functional.cross_entropy(net(x), y) / len(batches)).backward()
    time.sleep(0.3)  # Horovod's background thread has long finished the buckets started by now
    after_backward = digest()
    loss = torch.tensor(0.5 + hvd.rank(), dtype=torch.float64)
    if overlap is None:
        out = hvd.grouped_allreduce(
            [p.grad if p.grad is not None else torch.zeros_like(p) for p in params] + [loss], **average
        )
        for p, g in zip(params, out):
            p.grad = g
        mean_loss = float(out[-1])
    else:
        early = list(overlap._handles)  # the buckets the hooks started, in order, before finish()
        mean_loss = overlap.finish(loss)
    return f"{digest()} loss={mean_loss!r}", early, after_backward


plain, _, local = grads(None)  # local: this rank's own gradient
overlapped, early, seen = grads(OverlappedAllreduce(params, hvd, average, bucket_bytes=600))
print(f"RANK {hvd.rank()} PLAIN {plain} OVERLAP {overlapped} EARLY {len(early)}", flush=True)
print(f"RANK {hvd.rank()} IN-PLACE LOCAL-KEPT {seen == local}", flush=True)
kept, _, seen = grads(OverlappedAllreduce(params, hvd, average, bucket_bytes=600), keep_local=True)
print(f"RANK {hvd.rank()} KEEP-LOCAL LOCAL-KEPT {seen == local} SAME-AVERAGE {kept == plain}", flush=True)

grouped = [p for p in params if p.dim() > 1] + [p for p in params if p.dim() == 1]  # weights, then biases
for name, order in (("GROUPS", grouped), ("MODEL", model_order(grouped, net))):
    overlap = OverlappedAllreduce(order, hvd, average, bucket_bytes=600)
    _, started, _ = grads(overlap)
    print(f"RANK {hvd.rank()} {name} STARTED {','.join(map(str, started))} OF {len(overlap.buckets)}", flush=True)
