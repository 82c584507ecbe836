"""The LightningModule: loss, torchmetrics, optimizers and schedulers for a classifier.

Hyper-parameters are saved as plain dicts/lists/numbers only, so checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from litpipe.config import ModelConfig, TrainConfig
from litpipe.models import build_network


class LitClassifier(L.LightningModule):
    """Image classifier; the network itself comes from :func:`litpipe.models.build_network`."""

    def __init__(self, model: dict[str, Any], train: dict[str, Any], in_shape: list[int],
                 classes: list[str], mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = ModelConfig.model_validate(model)
        self.train_cfg = TrainConfig.model_validate(train)
        self.classes = list(classes)
        n = len(classes)
        self.net: nn.Module = build_network(self.model_cfg, tuple(in_shape), n, mean, std)
        self.example_input_array = torch.zeros(1, *in_shape)
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(n, average="micro")
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(n, average="micro")
        self.test_acc = torchmetrics.classification.MulticlassAccuracy(n, average="micro")
        self.test_f1 = torchmetrics.classification.MulticlassF1Score(n, average="macro")
        self.test_class_acc = torchmetrics.classification.MulticlassAccuracy(n, average=None)
        self.test_confusion = torchmetrics.classification.MulticlassConfusionMatrix(n)
        self.test_loss_sum = torchmetrics.SumMetric()
        self.test_count = torchmetrics.SumMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
                      ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        # logger=False: the EpochHistory callback logs epoch values with step=epoch, which
        # is what the MLflow UI should plot; Lightning would use the global step.
        self.log("train_loss", loss, on_step=False, on_epoch=True, logger=False,
                 batch_size=len(y))
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, logger=False,
                 prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
                        ) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, logger=False,
                 prog_bar=True, batch_size=len(y))
        self.log("val_acc", self.val_acc, on_epoch=True, logger=False, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_loss_sum.update(F.cross_entropy(logits, y, reduction="sum"))
        self.test_count.update(torch.tensor(float(len(y))))
        for metric in (self.test_acc, self.test_f1, self.test_class_acc, self.test_confusion):
            metric.update(logits, y)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0
                     ) -> torch.Tensor:
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

    # ------------------------------------------------------------ optimisers
    def configure_optimizers(self) -> Any:
        cfg = self.train_cfg
        params = self.parameters()
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "none":
            return opt
        if cfg.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size,
                                                    gamma=cfg.gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if cfg.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        total = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
