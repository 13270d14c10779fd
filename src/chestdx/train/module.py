"""LightningModule: normalization + ChestModel, masked imbalance-weighted loss, validation macro AUROC."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from chestdx.data.normalize import Normalize
from chestdx.train.config_schema import OptimizerSection, SchedulerSection


def macro_auroc(y: np.ndarray, p: np.ndarray, min_positives: int = 1) -> tuple[float, dict[int, float]]:
    """AUROC per label with both classes among the known (non-NaN) targets, and their mean over the labels
    with >= ``min_positives`` positives (all of them when none has that many); NaN when no label is estimable."""
    per_label: dict[int, float] = {}
    counted: list[float] = []
    for j in range(y.shape[1]):
        known = ~np.isnan(y[:, j])
        yj = y[known, j]
        if yj.size and 0 < yj.sum() < yj.size:
            per_label[j] = float(roc_auc_score(yj, p[known, j]))
            if yj.sum() >= min_positives:
                counted.append(per_label[j])
    counted = counted or list(per_label.values())
    return (float(np.mean(counted)) if counted else float("nan")), per_label


class ChestModule(L.LightningModule):
    """Trains a ``ChestModel`` on (x01, y, meta) batches from ``CXRDataset``."""

    def __init__(self, model: nn.Module, loss: nn.Module, optimizer: dict, scheduler: dict,
                 label_names: list[str], monitor_min_positives: int = 1, channels_last: bool = False):
        super().__init__()
        # model and loss are objects (pass them again to ``load_from_checkpoint``); the rest reloads from hparams
        self.save_hyperparameters(ignore=["model", "loss"])
        self.channels_last = bool(channels_last)  # NHWC activations: faster convolutions with AMP on GPUs
        self.monitor_min_positives = int(monitor_min_positives)
        self.model = model
        self.norm = Normalize(model.mean, model.std)
        self.loss_fn = loss
        self.optim_cfg = OptimizerSection.model_validate(dict(optimizer)).model_dump()  # defaults filled in
        self.sched_cfg = SchedulerSection.model_validate(dict(scheduler)).model_dump()
        self.label_names = list(label_names)
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x01: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x01)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x, meta if meta is not None and meta.shape[-1] else None)

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx):
        x, y, meta = batch
        loss = self.loss_fn(self(x, meta), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0],
                 sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, meta = batch
        logits = self(x, meta)
        self.log("val_loss", self.loss_fn(logits, y), on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self._val_outputs.append((torch.sigmoid(logits.float()).detach(), y.detach()))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        p = torch.cat([o[0] for o in self._val_outputs])
        y = torch.cat([o[1] for o in self._val_outputs])
        self._val_outputs.clear()
        if self.trainer.world_size > 1:
            p = self.all_gather(p).reshape(-1, p.shape[-1])
            y = self.all_gather(y).reshape(-1, y.shape[-1])
        auc, _ = macro_auroc(y.cpu().numpy(), p.cpu().numpy(), self.monitor_min_positives)
        # NaN (no estimable label) would break early stopping: log 0.5 = chance instead
        self.log("val_macro_auroc", auc if np.isfinite(auc) else 0.5, prog_bar=True, sync_dist=False)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """Step, then free the gradients at once: Lightning zeroes them only after the next forward pass,
        which keeps a model-sized block alive (and the allocator busier) during every forward."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        optimizer.zero_grad(set_to_none=True)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        name, lr, wd = self.optim_cfg["name"], self.optim_cfg["lr"], self.optim_cfg["weight_decay"]
        if name == "adam":
            opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
        elif name == "adamw":
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
        elif name == "sgd":
            opt = torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=0.9, nesterov=True)
        else:
            raise ValueError(f"unknown optimizer {name!r} (adam, adamw, sgd)")
        sched = self.sched_cfg["name"]
        if sched == "none":
            return opt
        if sched == "cosine":
            epochs = max(1, int(self.trainer.max_epochs or 1))
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)}
        if sched == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=self.sched_cfg["factor"], patience=self.sched_cfg["patience"])
            return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val_macro_auroc"}}
        raise ValueError(f"unknown scheduler {sched!r} (none, cosine, plateau)")
