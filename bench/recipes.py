"""Recipe search: test accuracy against training compute, one recipe per run.

Trains one network on the split stage's arrays with a plain PyTorch loop that does what the
train stage does (AdamW, one-cycle, the DataModule's shifts and flips, seeded), then
evaluates on the test set, plain and with flip test-time augmentation. It counts the
training FLOPs with ``torch.utils.flop_counter`` (forward and backward of one batch, times
the batches), so every recipe's cost is a number that does not depend on the machine.
Appends one JSON line per recipe to ``--out``; ``--table`` prints the frontier as Markdown.

    python bench/recipes.py --net "c24,p,c48,c48,p,c96,c96,p|gap" --epochs 8 --out r.jsonl
    python bench/recipes.py --table r.jsonl

The network spec: comma-separated layers, then ``|`` and the head. ``cN`` is a 3×3
Conv–BatchNorm–ReLU of N channels, ``cNs2`` the same with stride 2, ``dN`` a depthwise 3×3
then a pointwise 1×1 to N channels (each with BatchNorm–ReLU), ``p`` a 2×2 max-pool;
the head is ``gap`` (global average pool, then the classes) or ``hN`` (flatten, a hidden
layer of N, then the classes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from litpipe.data.datamodule import epoch_seed, random_hflip, random_shift
from litpipe.training.flops import counter


def build(spec: str, mean: float, std: float, classes: int = 10) -> nn.Module:
    """The network a spec describes (module docstring)."""
    body, head = spec.split("|")
    layers: list[nn.Module] = []
    c, size = 1, 28
    for tok in body.split(","):
        if tok == "p":
            layers.append(nn.MaxPool2d(2))
            size //= 2
            continue
        stride = 2 if tok.endswith("s2") else 1
        out = int(tok[1:].removesuffix("s2"))
        if tok[0] == "d":  # depthwise 3×3, then pointwise 1×1 to ``out`` channels
            layers += [nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False),
                       nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
        else:
            layers += [nn.Conv2d(c, out, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        c = out
        size = -(-size // stride)
    if head == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes)]
    else:
        hidden = int(head[1:])
        layers += [nn.Flatten(), nn.Linear(c * size * size, hidden), nn.ReLU(inplace=True),
                   nn.Linear(hidden, classes)]

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body((x - mean) / std)

    return Net()


def train_flops(model: nn.Module, batch: int) -> int:
    """FLOPs of one training step (forward and backward) on ``batch`` images."""
    x = torch.rand(batch, 1, 28, 28)
    with counter() as count:
        F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
    model.zero_grad(set_to_none=True)
    return count.get_total_flops()


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved by (dy, dx) pixels, zero-filled."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))
    return p[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cl: bool
             ) -> tuple[float, float, float]:
    """Accuracy plain, with the mean of the image's and its mirror's probabilities, and
    with six views (those two, each also moved one pixel up-left and down-right)."""
    model.eval()
    plain = tta = tta6 = 0
    with torch.no_grad():
        for i in range(0, len(x), 500):
            xb = x[i:i + 500].float().div(255)
            yb = y[i:i + 500]

            def probs(v: torch.Tensor) -> torch.Tensor:
                if cl:
                    v = v.contiguous(memory_format=torch.channels_last)
                return model(v).softmax(1)

            p = probs(xb)
            q = (p + probs(xb.flip(-1))) / 2
            r = q * 2
            for v in (xb, xb.flip(-1)):
                r = r + probs(shifted(v, -1, -1)) + probs(shifted(v, 1, 1))
            plain += int((p.argmax(1) == yb).sum())
            tta += int((q.argmax(1) == yb).sum())
            tta6 += int((r.argmax(1) == yb).sum())
    return plain / len(x), tta / len(x), tta6 / len(x)


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    d = Path(args.processed)
    x = torch.from_numpy(np.load(d / "train_x.npy"))
    y = torch.from_numpy(np.load(d / "train_y.npy")).long()
    tx = torch.from_numpy(np.load(d / "test_x.npy"))
    ty = torch.from_numpy(np.load(d / "test_y.npy")).long()
    vx = torch.from_numpy(np.load(d / "val_x.npy"))
    vy = torch.from_numpy(np.load(d / "val_y.npy")).long()
    xf = x.float() / 255
    model = build(args.net, float(xf.mean()), float(xf.std()))
    del xf
    cl = args.channels_last
    if cl:
        model = model.to(memory_format=torch.channels_last)
    steps = -(-len(x) // args.batch)
    flops_step = train_flops(model, args.batch)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema),
        use_buffers=True) if args.ema else None
    if args.opt == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                              weight_decay=args.wd, fused=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd,
                                fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr,
                                                total_steps=steps * args.epochs,
                                                pct_start=args.pct_start)
    bf16 = args.precision == "bf16"
    gen = torch.Generator()
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        gen.manual_seed(epoch_seed(args.seed, epoch, "augment"))
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(
            epoch_seed(args.seed, epoch, "shuffle")))
        for idx in order.split(args.batch):
            xb = x[idx].float().div(255)
            xb = random_shift(xb, args.shift, generator=gen)
            xb = random_hflip(xb, generator=gen)
            if cl:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(xb), y[idx], label_smoothing=args.ls)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
    train_s = time.perf_counter() - t0
    res = {"net": args.net, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
           "opt": args.opt, "shift": args.shift,
           "wd": args.wd, "ls": args.ls, "ema": args.ema, "pct_start": args.pct_start,
           "precision": args.precision, "seed": args.seed,
           "train_tflop": flops_step * steps * args.epochs / 1e12,
           "train_s": round(train_s, 1)}
    res["val_acc"], res["val_acc_flip"], res["val_acc_tta6"] = evaluate(model, vx, vy, cl)
    res["test_acc"], res["test_acc_flip"], res["test_acc_tta6"] = evaluate(model, tx, ty, cl)
    if ema is not None:
        (res["ema_val_acc"], res["ema_val_acc_flip"],
         res["ema_val_acc_tta6"]) = evaluate(ema.module, vx, vy, cl)
        (res["ema_test_acc"], res["ema_test_acc_flip"],
         res["ema_test_acc_tta6"]) = evaluate(ema.module, tx, ty, cl)
    res["gflops"] = round(res["train_tflop"] * 1e3 / train_s, 1)
    return res


def table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["train_tflop"])
    print("| network | epochs | batch | ls | ema | prec | TFLOP | test | test+flip | val+flip |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['net']}` | {r['epochs']} | {r['batch']} | {r['ls']} | {r['ema']} | "
              f"{r['precision']} | {r['train_tflop']:.1f} | {r['test_acc']:.4f} | "
              f"{r['test_acc_flip']:.4f} | {r['val_acc_flip']:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processed", default="data/processed")
    ap.add_argument("--net", default="c32,c32,p,c64,c64,p|h256")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.004)
    ap.add_argument("--opt", choices=("adamw", "sgd"), default="adamw")
    ap.add_argument("--shift", type=int, default=2, help="largest random shift, pixels")
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--ls", type=float, default=0.0)
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--pct-start", type=float, default=0.3)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--flops-only", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path)
    args = ap.parse_args()
    if args.table:
        table(args.table)
        return
    if args.flops_only:
        steps = -(-55000 // args.batch)
        f = train_flops(build(args.net, 0.3, 0.35), args.batch) * steps * args.epochs
        print(f"{args.net}: {f / 1e12:.2f} TFLOP for {args.epochs} epochs")
        return
    res = run(args)
    line = json.dumps(res)
    print(line, flush=True)
    if args.out:
        with args.out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
