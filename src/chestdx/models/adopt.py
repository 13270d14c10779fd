"""Adopt a torchxrayvision model as is: its outputs for our labels, no training.

``adopt_model("xrv:densenet121-res224-all", labels)`` -> (``ChestModel``, :class:`AdoptInfo`). The model is an
ordinary ``xrv_densenet121`` / ``xrv_resnet50`` ChestModel whose linear head holds xrv's classifier rows of the
labels that have an xrv output (an output-selection head: logit of label k = xrv's logit of its output), in
the order of ``labels``; labels without one are dropped (``info.dropped`` says why). Its state dict rebuilds
with ``build_model(info.arch, len(info.labels))`` like any trained run's, so a run dir writer stores it as one
member. Outputs are xrv's raw logits (sigmoid = xrv's ``apply_sigmoid`` probabilities); xrv's ``op_norm``
rescaling is not applied (see ``chestdx.models.xrv``), its ``op_threshs`` are kept in ``info`` for reference.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chestdx.models.base import ChestModel
from chestdx.models.xrv import build_xrv, map_xrv_labels
from chestdx.models.xrv_weights import load_xrv_source

__all__ = ["AdoptInfo", "adopt_model"]


@dataclass
class AdoptInfo:
    """What was adopted: facts for model.json / the run's summary, and messages for the user."""

    arch: str                                 # "xrv_densenet121" | "xrv_resnet50"
    pretrained: str                           # the spec as given (goes to model.json "pretrained")
    source: str                               # URL or local path actually read
    weights_name: str | None                  # torchxrayvision weights name, None for an unnamed local file
    labels: list[str]                         # kept labels, in head order
    xrv_outputs: dict[str, str]               # kept label -> xrv output name
    dropped: dict[str, str]                   # dropped label -> reason
    op_threshs: dict[str, float | None]       # kept label -> xrv's op_thresh (None: unknown / NaN)
    input_size: int
    mean: list[float]
    std: list[float]
    notes: list[str] = field(default_factory=list)

    def messages(self) -> list[str]:
        """Lines to show the user."""
        out = [f"adopted {self.weights_name or self.source} as {self.arch}: {len(self.labels)} labels "
               f"({', '.join(self.labels)})"]
        out += [f"dropped {label}: {why}" for label, why in self.dropped.items()]
        return out + self.notes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def adopt_model(weights_spec: str | os.PathLike, labels: Sequence[str],
                arch: str | None = None) -> tuple[ChestModel, AdoptInfo]:
    """Load torchxrayvision weights (``xrv:<name>`` or a ``.pt`` path) as a ChestModel predicting ``labels``.

    ``arch`` (optional) must match the weights; by default it comes from the name or the file's key layout.
    Raises ``PretrainedWeightsError`` (file / download / key check) or ``ValueError`` (no label has an output).
    """
    src = load_xrv_source(weights_spec, arch)
    kept, dropped = map_xrv_labels(src.labels, labels)
    name = src.weights.name if src.weights else None
    if not kept:
        raise ValueError(f"none of the labels {list(labels)} has an output in {name or src.source}; "
                         f"its outputs: {[t for t in src.labels if t]}")
    kept_labels = [lab for lab in labels if lab in kept]
    model = build_xrv(src.arch, len(kept_labels), src, labels=kept_labels).eval()
    th = src.op_threshs
    op = {lab: (None if th is None or math.isnan(th[kept[lab]]) else float(th[kept[lab]])) for lab in kept_labels}
    notes = list(src.notes) + ["outputs are torchxrayvision's raw logits (its op_norm rescaling is not applied); "
                               "calibrate on your data with `chestdx evaluate`"]
    info = AdoptInfo(arch=src.arch, pretrained=str(weights_spec), source=src.source, weights_name=name,
                     labels=kept_labels, xrv_outputs={lab: src.labels[kept[lab]] for lab in kept_labels},
                     dropped=dropped, op_threshs=op, input_size=model.input_size, mean=list(model.mean),
                     std=list(model.std), notes=notes)
    return model, info
