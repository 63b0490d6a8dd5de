"""Training-throughput levers of issue 33 (item 2), before against after, interleaved in one process.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.train_levers [--repeats 5] [--threads 1]

Setting: the cpu profile's LeNet + FashionMNIST regularisation base (30,000 training images after a 10 %
validation split, batch 256). "before" is the code as it was: each batch fetched through a DataLoader over the
nested Subset (iterated through tqdm.auto, as Trainer.run_epoch did), evaluation under torch.no_grad through a
DataLoader at batch 1000. "after" is Trainer as it is now: one index gather per batch from the held tensors,
evaluation under torch.inference_mode on slices of the tensors. Every repeat runs every variant once, in
rotated order, and medians are reported, because the machine is shared.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from htr_utils.study.data import epoch_batch_indices, make_loader
from htr_utils.study.paths import data_root
from htr_utils.study.profiles import get_profile
from htr_utils.study.training import Trainer, evaluate, sgd_step


@torch.no_grad()
def evaluate_before(model: nn.Module, dataset, batch_size: int = 1000) -> tuple[float, float]:
    """The evaluation as it was: no_grad, a DataLoader at batch 1000."""
    model.eval()
    loss_sum = correct = 0.0
    for x, y in make_loader(dataset, batch_size, shuffle=False):
        out = model(x)
        loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
        correct += float((out.argmax(1) == y).sum())
    model.train()
    return loss_sum / len(dataset), correct / len(dataset)


def epoch_before(tr: Trainer, epoch: int) -> None:
    """Trainer.run_epoch's training loop and evaluation as they were (DataLoader through tqdm, old evaluation)."""
    cfg = tr.config
    loader = make_loader(tr.data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch)
    gen = torch.Generator().manual_seed(epoch)
    tr.model.train()
    with tqdm(loader, disable=True) as bar:
        for step, (x, y) in enumerate(bar):
            pen = tr.penalty_params if cfg.htr_gamma > 0 and step % cfg.htr_freq == 0 else None
            out, loss, _ = sgd_step(tr.model, tr.optimizer, tr.loss_fn, x, y, pen, cfg.htr_gamma, cfg.htr_probes, gen)
            float(loss.detach()), float((out.argmax(1) == y).sum())
    tr.scheduler.step()
    evaluate_before(tr.model, tr.data.test), evaluate_before(tr.model, tr.data.val)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block (plain); HTR blocks use a quarter")
    ap.add_argument("--eval-batches", type=int, nargs="+", default=[500, 1000, 2000, 10000])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = get_profile("cpu").regularisation["lenet_fashionmnist"].base
    cfg = base.replace(htr_gamma=1e-3, htr_start_epoch=0)  # an HTR-arm epoch: 3 penalty steps of 118
    tr = Trainer(cfg, str(data_root()), device="cpu")
    gen = torch.Generator().manual_seed(0)
    print(f"threads {torch.get_num_threads()}, train {len(tr.train_tensors)}, test {len(tr.data.test)}, "
          f"val {len(tr.data.val)}, load {os.getloadavg()}")

    def step_blocks(htr: bool) -> tuple[Callable[[], None], Callable[[], None]]:
        n = args.steps if not htr else max(1, args.steps // 4)
        pen = tr.penalty_params if htr else None

        def before() -> None:
            loader = make_loader(tr.data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=1)
            with tqdm(loader, disable=True) as bar:
                for _, (x, y) in zip(range(n), bar):
                    sgd_step(tr.model, tr.optimizer, tr.loss_fn, x, y, pen, 1e-3, 10, gen)

        def after() -> None:
            for positions in epoch_batch_indices(len(tr.train_tensors), cfg.batch_size, cfg.seed, 1)[:n]:
                x, y = tr.train_tensors.batch(positions)
                sgd_step(tr.model, tr.optimizer, tr.loss_fn, x, y, pen, 1e-3, 10, gen)
        return before, after

    plain_b, plain_a = step_blocks(False)
    htr_b, htr_a = step_blocks(True)
    test_t, val_t = tr.eval_tensors
    variants: dict[str, tuple[Callable[[], None], float]] = {
        "plain step, before": (plain_b, args.steps), "plain step, after": (plain_a, args.steps),
        "HTR step, before": (htr_b, max(1, args.steps // 4)), "HTR step, after": (htr_a, max(1, args.steps // 4)),
        "eval pass, before (no_grad, DataLoader, 1000)": (lambda: (evaluate_before(tr.model, tr.data.test),
                                                                  evaluate_before(tr.model, tr.data.val)), 1),
    }
    for b in args.eval_batches:
        variants[f"eval pass, after (inference_mode, {b})"] = (
            lambda b=b: (evaluate(tr.model, test_t, b), evaluate(tr.model, val_t, b)), 1)
    variants["epoch, before"] = (lambda: epoch_before(tr, 2), 1)
    variants["epoch, after"] = (lambda: tr.run_epoch(2, progress=False), 1)
    names = list(variants)
    for name in names:  # warm-up
        variants[name][0]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, per = variants[name]
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / per)
        print(f"repeat {r + 1}/{args.repeats} done, load {os.getloadavg()[0]:.1f}", flush=True)
    med = {n: statistics.median(v) for n, v in times.items()}
    spread = {n: (min(v), max(v)) for n, v in times.items()}
    for n in names:
        print(f"{n:50s} median {1e3 * med[n]:9.1f} ms  (min {1e3 * spread[n][0]:.1f}, max {1e3 * spread[n][1]:.1f})")
    print("ratios before/after: of the medians | median of the per-repeat ratios | of the minima")

    def ratio(label: str, before: str, after: str) -> None:
        per = statistics.median(b / a for b, a in zip(times[before], times[after]))
        print(f"  {label:14s} {med[before] / med[after]:.2f} | {per:.2f} | {spread[before][0] / spread[after][0]:.2f}")
    ratio("plain step", "plain step, before", "plain step, after")
    ratio("HTR step", "HTR step, before", "HTR step, after")
    ratio("epoch", "epoch, before", "epoch, after")
    for b in args.eval_batches:
        ratio(f"eval at {b}", "eval pass, before (no_grad, DataLoader, 1000)", f"eval pass, after (inference_mode, {b})")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
