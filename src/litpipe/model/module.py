"""The LightningModules: loss, torchmetrics, optimiser and scheduler around a network.

A checkpoint becomes a module again in :mod:`litpipe.model.checkpoint`, beside these.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from litpipe.catalog import NETWORKS, OPTIMIZERS, SCHEDULERS
from litpipe.data.datasets import get_spec
from litpipe.model.networks import build_network
from litpipe.schema import Params

# Attributes that only ever hold a plain value, set many times a training step: Lightning sets
# ``_current_fx_name`` before and after every hook call (about forty a step), and the step
# records its gradient norm. ``nn.Module.__setattr__`` looks each value up in the parameter,
# submodule and buffer registries through Python-level ``isinstance`` checks first: a
# measurable share of a small model's step (docs/performance.md). Such a value can never
# belong in those registries, so these names skip the lookup.
_PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "grad_norm", "grad_norm_max"})


class LitBase(L.LightningModule):
    """What every litpipe model shares: the network, optimiser and scheduler, grad norms.

    Every argument is a plain number, string or list, and ``save_hyperparameters`` stores
    them in the checkpoint: :func:`litpipe.model.checkpoint.load_module` rebuilds the
    module from a checkpoint loaded with ``weights_only=True``, so reading a model never
    unpickles code.
    """

    def __init__(self, *, network: str, in_shape: list[int], classes: list[str],
                 mean: list[float], std: list[float], channels: list[int],
                 convs_per_block: int, hidden: list[int], dropout: float, latent_dim: int,
                 optimizer: str, lr: float, weight_decay: float, momentum: float,
                 scheduler: str, step_size: int, gamma: float, label_smoothing: float,
                 test_time_flip: bool) -> None:
        super().__init__()
        # logger=False: the train stage logs the whole params.yaml, flattened, once.
        self.save_hyperparameters(logger=False)
        self.classes = list(classes)
        # A plain attribute: Lightning's learning-rate finder sets it on the throwaway module
        # it searches with (training/tuning.py); the trained module gets the final rate.
        self.lr = lr
        self.net: nn.Module = build_network(network, tuple(in_shape), len(classes), mean,
                                            std, channels, convs_per_block, hidden, dropout,
                                            latent_dim, test_time_flip)
        self.example_input_array = torch.zeros(1, *in_shape)
        self.grad_norm_max = 0.0  # largest post-clipping gradient norm of the current epoch
        self.grad_norm = 0.0  # the last optimiser step's (a NaN or inf says training diverged)
        self._tallies: dict[str, list[list[Any]]] = {}  # stage -> losses, sizes, classes
        self._trained: list[nn.Parameter] = []  # parameters with gradients, listed once a fit

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def task(self) -> str:
        """``classification`` or ``reconstruction`` (what evaluate and export report)."""
        return NETWORKS[self.hparams["network"]].task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ------------------------------------------------------------------ epoch metrics
    # Lightning's per-step self.log() and a torchmetrics update cost tens of microseconds
    # each, a real share of a small model's step; so does every extra tensor op. Each step
    # only keeps its loss, batch size, predicted classes and labels (one op, the argmax;
    # comparing and counting waits for the epoch's end, one op for all batches); the epoch
    # means are computed and logged once, as ordinary Lightning metrics (progress bar,
    # callbacks, any logger a user adds).

    def _tally(self, stage: str, loss: torch.Tensor, n: int,
               predicted: torch.Tensor | None = None, labels: torch.Tensor | None = None
               ) -> None:
        losses, sizes, classes = self._tallies.setdefault(stage, [[], [], []])
        losses.append(loss.detach())
        sizes.append(n)
        if predicted is not None:
            classes.append((predicted, labels))

    def _log_epoch(self, stage: str, accuracy: bool) -> None:
        t = self._tallies.pop(stage, None)
        if t is None or not t[1]:
            return
        losses, sizes, classes = t
        n = sum(sizes)
        weights = torch.tensor(sizes, dtype=torch.float32, device=losses[0].device)
        # One value for the epoch (the last training batch's hook would default to a step).
        # batch_size=1: Lightning weights an epoch value by its batch size, in float32, and
        # this value is already the epoch's mean; a weight of 1 keeps it exact, where the
        # last batch's size (which Lightning would otherwise use) could move its last bit.
        kw: dict[str, Any] = {"on_step": False, "on_epoch": True, "sync_dist": True,
                              "batch_size": 1}
        loss = torch.dot(torch.stack(losses).float(), weights) / n
        self.log(f"{stage}_loss", loss, prog_bar=stage == "val", **kw)
        if accuracy and classes:
            predicted, labels = (torch.cat(c) for c in zip(*classes, strict=True))
            self.log(f"{stage}_acc", (predicted == labels).sum().float() / n, prog_bar=True,
                     **kw)

    def on_fit_start(self) -> None:
        # Listed once: self.parameters() walks every submodule (torchmetrics' too), a cost
        # paid on every step if the gradient norm asked for it each time.
        self._trained = [p for p in self.parameters() if p.requires_grad]

    def on_train_epoch_start(self) -> None:
        self.grad_norm_max = 0.0
        self._tallies.pop("train", None)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The epoch's last batch: log the means now, so that callbacks reading
        # trainer.callback_metrics at the epoch's end see them.
        if self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._log_epoch("train", self.task == "classification")

    # ------------------------------------------------------------------ training steps

    def _step_loss(self, batch: Any) -> torch.Tensor:
        """One training batch's loss (and its tally): what every optimiser step minimises."""
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step_loss(batch)

    def on_validation_epoch_start(self) -> None:
        self._tallies.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.task == "classification")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self._track_grad_norm()

    def _track_grad_norm(self) -> None:
        """After an optimiser step: gradients are still in place (zeroed at the next step)
        and already clipped, so this is the norm the optimiser used (one fused kernel)."""
        grads = [p.grad for p in self._trained if p.grad is not None]
        if grads:
            norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
            self.grad_norm = norm
            self.grad_norm_max = max(self.grad_norm_max, norm)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        entry = OPTIMIZERS[hp.optimizer]
        # PyTorch's fused kernels update all parameters in one pass instead of a Python
        # loop over tensors: a real share of a small model's step (docs/performance.md).
        # Lightning refuses gradient clipping with a fused optimiser under mixed precision
        # (it cannot unscale first), so a clipping run keeps the per-tensor loop.
        clipping = bool(getattr(self._trainer, "gradient_clip_val", None))
        kwargs = {"lr": self.lr, "weight_decay": hp.weight_decay,
                  **{k: hp[k] for k in entry.extra}, **({} if clipping else {"fused": True})}
        opt = entry.load()(self.parameters(), **kwargs)
        sched = SCHEDULERS[hp.scheduler]
        if sched is None:
            return opt
        scheduler = sched.load()(opt, **sched.arguments(dict(hp), self.lr, self.trainer))
        return {"optimizer": opt,
                "lr_scheduler": {"scheduler": scheduler, "interval": sched.interval}}


# Lightning reads training_step's signature on every step (does it take batch_idx?), and
# inspect builds it anew each time unless the function carries one.
LitBase.training_step.__signature__ = inspect.signature(  # type: ignore[attr-defined]
    LitBase.training_step)


class LitClassifier(LitBase):
    """Image classifier: cross-entropy, accuracy, macro-F1, per-class accuracy, confusion."""

    def __init__(self, **hyperparameters: Any) -> None:  # LitBase's arguments
        super().__init__(**hyperparameters)
        n = len(self.classes)
        self.test_acc = torchmetrics.classification.MulticlassAccuracy(n, average="micro")
        self.test_f1 = torchmetrics.classification.MulticlassF1Score(n, average="macro")
        self.test_class_acc = torchmetrics.classification.MulticlassAccuracy(n, average=None)
        self.test_confusion = torchmetrics.classification.MulticlassConfusionMatrix(n)
        self.test_loss_sum = torchmetrics.SumMetric()
        self.test_count = torchmetrics.SumMetric()

    def _step_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams["label_smoothing"])
        self._tally("train", loss, len(y), logits.detach().argmax(1), y)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
                        ) -> None:
        x, y = batch
        logits = self(x)
        self._tally("val", F.cross_entropy(logits, y), len(y), logits.argmax(1), y)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_loss_sum.update(F.cross_entropy(logits, y, reduction="sum"))
        self.test_count.update(torch.tensor(float(len(y))))
        for metric in (self.test_acc, self.test_f1, self.test_class_acc, self.test_confusion):
            metric.update(logits, y)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0
                     ) -> torch.Tensor:
        """Class probabilities (what ``litpipe predict`` prints)."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return torch.softmax(self(x), dim=1)

    def test_results(self) -> dict[str, Any]:
        """Aggregated test metrics (after ``trainer.test``), as plain Python values."""
        return {
            "test_acc": float(self.test_acc.compute()),
            "test_macro_f1": float(self.test_f1.compute()),
            "test_loss": float(self.test_loss_sum.compute() / self.test_count.compute()),
            "per_class_acc": {c: float(a) for c, a in
                              zip(self.classes, self.test_class_acc.compute(), strict=True)},
            "confusion": self.test_confusion.compute().tolist(),
        }


class LitAutoEncoder(LitBase):
    """An autoencoder as a reconstruction task: MSE between input and output."""

    def __init__(self, **hyperparameters: Any) -> None:  # LitBase's arguments
        super().__init__(**hyperparameters)
        self.test_mse = torchmetrics.MeanSquaredError()
        self.test_mae = torchmetrics.MeanAbsoluteError()

    def _loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch[0]
        x_hat = self(x)
        return F.mse_loss(x_hat, x), x_hat

    def _step_loss(self, batch: Any) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self._tally("train", loss, len(batch[0]))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, _ = self._loss(batch)
        self._tally("val", loss, len(batch[0]))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x = batch[0]
        x_hat = self(x)
        self.test_mse.update(x_hat, x)
        self.test_mae.update(x_hat, x)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0
                     ) -> torch.Tensor:
        """Reconstructions."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x)

    def test_results(self) -> dict[str, Any]:
        return {"test_mse": float(self.test_mse.compute()),
                "test_mae": float(self.test_mae.compute())}


def build_module(params: Params, stats: dict[str, Any], lr: float) -> LitBase:
    """A fresh LightningModule for ``params``, sized by the split stage's ``stats.json``,
    training at ``lr`` (``optimizer.lr``, or the finder's choice when that is auto)."""
    m, opt, sched = params.model, params.optimizer, params.scheduler
    cls = LitAutoEncoder if m.task == "reconstruction" else LitClassifier
    module = cls(network=m.name, in_shape=list(stats["shape"]),
                 classes=list(stats["classes"]), mean=list(stats["mean"]),
                 std=list(stats["std"]), channels=list(m.channels),
                 convs_per_block=m.convs_per_block, hidden=list(m.hidden), dropout=m.dropout,
                 latent_dim=m.latent_dim, optimizer=opt.name, lr=lr,
                 weight_decay=opt.weight_decay, momentum=opt.momentum, scheduler=sched.name,
                 step_size=sched.step_size, gamma=sched.gamma,
                 label_smoothing=m.label_smoothing,
                 # Only where a mirrored image shows the same class (data/datasets.py).
                 test_time_flip=m.test_time_flip
                 and get_spec(stats["dataset"]).mirror_symmetric if "dataset" in stats
                 else False)
    if m.channels_last and NETWORKS[m.name].convolutional:
        module = module.to(memory_format=torch.channels_last)
    return module
