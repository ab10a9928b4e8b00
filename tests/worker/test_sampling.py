"""Virtual workers: the micro-batches depend on (B, K), never on how K splits into np x accum."""

import numpy as np

from lbbench.worker.sampling import GlobalBatchSampler, eval_shard


def take(it, n):
    return [next(it) for _ in range(n)]


def test_np2_accum1_equals_np1_accum2():
    s = GlobalBatchSampler(n=100, global_batch=32, virtual_workers=2, seed=3)
    r0, r1 = take(s.stream(0, 1), 8), take(s.stream(1, 1), 8)
    single = take(s.stream(0, 2), 16)
    assert all(np.array_equal(a, b) for a, b in zip(r0, single[0::2]))
    assert all(np.array_equal(a, b) for a, b in zip(r1, single[1::2]))


def test_epochs_cover_the_data_and_wrap_the_last_step():
    s = GlobalBatchSampler(n=100, global_batch=32, virtual_workers=4, seed=0)
    assert s.steps_per_epoch == 4 and s.micro_batch == 8
    epoch1 = np.concatenate([s.global_indices(1, t) for t in range(4)])
    assert len(epoch1) == 128 and set(epoch1) == set(range(100))
    assert np.array_equal(epoch1[100:], s.permutation(1)[:28])  # wrap within the epoch
    assert not np.array_equal(s.permutation(1), s.permutation(2))
    resumed = take(s.stream(2, 1, epoch=2, step=1), 3)
    assert np.array_equal(resumed[0], s.micro_indices(2, 1, 2))


def test_eval_shards_cover_each_sample_once():
    shards = [eval_shard(261, r, 2, 100) for r in range(2)]
    flat = np.concatenate([b for sh in shards for b in sh])
    assert sorted(flat.tolist()) == list(range(261))
