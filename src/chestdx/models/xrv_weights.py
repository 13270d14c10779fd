"""torchxrayvision weights: the name -> URL table, download + cache, and a safe reader of its ``.pt`` files.

``pretrained`` for the ``xrv_*`` architectures is either ``xrv:<name>`` (a name of the table below, as in
torchxrayvision 1.5.7's ``xrv.models.model_urls``; the short forms ``all``, ``nih``, ... also work) or a path.
``xrv:<name>`` reads ``$CHESTDX_XRV_CACHE`` (default ``~/.cache/chestdx/xrv``)/<file name of the URL>, else
downloads it there; offline, the error names the URL and the ``--set model.pretrained=/path/file.pt`` way.

File formats. torchxrayvision's DenseNet files are whole pickled ``torchxrayvision.models.DenseNet`` objects
(it loads them with ``weights_only=False``, i.e. it runs whatever the pickle says); its ResNet file is a plain
state dict. We never let a pickle resolve arbitrary globals. A state dict loads with ``torch.load(weights_only=
True)``. A pickled module cannot: besides its classes, the legacy (pre-zip) format stores each module class's
source as a persistent id, which the weights_only unpickler refuses. It is read by ``torch.load(weights_only=
False, pickle_module=<restricted>)``, whose ``find_class`` resolves only the globals torch itself allows under
``weights_only`` (tensor / storage rebuilders, OrderedDict, ...) and maps every class named under
``torchxrayvision.`` or ``torch.nn.modules.`` to an inert placeholder that only stores the object's
``__dict__`` (no code of those classes runs); the state dict is then read from the placeholders'
``_parameters`` / ``_buffers`` / ``_modules``. A pickle naming any other global (a function, another
package's class) is refused, naming it.
"""

from __future__ import annotations

import _compat_pickle
import math
import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch

from chestdx.models.weights import PretrainedWeightsError, _unwrap

__all__ = ["XRV_TARGETS", "XRV_WEIGHTS", "XrvSource", "XrvWeights", "load_xrv_source", "read_xrv_file",
           "xrv_cache_dir", "xrv_weight_names"]

_RELEASE = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
_D121 = "-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
NAN = math.nan

# torchxrayvision's ``datasets.default_pathologies``: the order of the 18 outputs of every xrv classifier.
XRV_TARGETS: tuple[str, ...] = (
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis", "Effusion",
    "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Lung Lesion", "Fracture",
    "Lung Opacity", "Enlarged Cardiomediastinum")


@dataclass(frozen=True)
class XrvWeights:
    """One torchxrayvision weight set: ``labels`` has 18 entries, "" where the output was never trained."""

    name: str
    arch: str
    url: str
    labels: tuple[str, ...]
    op_threshs: tuple[float, ...]
    resolution: int

    @property
    def file_name(self) -> str:
        return Path(urlparse(self.url).path).name


def _mask(keep: str) -> tuple[str, ...]:
    """The 18 targets with "" where ``keep`` (one char per target, "1" = trained) is "0"."""
    return tuple(t if k == "1" else "" for t, k in zip(XRV_TARGETS, keep, strict=True))


_CHEX = _mask("110110011010001111")
# Copied from torchxrayvision 1.5.7 models.py (model_urls): URL, trained labels, op_threshs, resolution.
XRV_WEIGHTS: dict[str, XrvWeights] = {w.name: w for w in (
    XrvWeights("densenet121-res224-all", "xrv_densenet121",
               _RELEASE + "nih-pc-chex-mimic_ch-google-openi-kaggle" + _D121,
               XRV_TARGETS, (0.07422872, 0.038290843, 0.09814756, 0.0098118475, 0.023601074, 0.0022490358,
                             0.010060724, 0.103246614, 0.056810737, 0.026791653, 0.050318155, 0.023985857,
                             0.01939503, 0.042889766, 0.053369623, 0.035975814, 0.20204692, 0.05015312), 224),
    XrvWeights("densenet121-res224-nih", "xrv_densenet121", _RELEASE + "nih" + _D121, _mask("1" * 14 + "0000"),
               (0.039117552, 0.0034529066, 0.11396341, 0.0057298196, 0.00045666535, 0.0018880932, 0.012037827,
                0.038744126, 0.0037213727, 0.014730946, 0.016149804, 0.054241467, 0.037198864, 0.0004403434,
                NAN, NAN, NAN, NAN), 224),
    XrvWeights("densenet121-res224-pc", "xrv_densenet121", _RELEASE + "pc" + _D121, _mask("1" * 14 + "0100"),
               (0.031012505, 0.013347598, 0.081435576, 0.001262615, 0.002587246, 0.0035944257, 0.0023071,
                0.055412333, 0.044385884, 0.042766232, 0.043258056, 0.037629247, 0.005658899, 0.0091741895,
                NAN, 0.026507627, NAN, NAN), 224),
    XrvWeights("densenet121-res224-chex", "xrv_densenet121", _RELEASE + "chex" + _D121, _CHEX,
               (0.1988969, 0.05710573, NAN, 0.0531293, 0.1435217, NAN, NAN, 0.27212676, 0.07749717, NAN,
                0.19712369, NAN, NAN, NAN, 0.09932402, 0.09273402, 0.3270967, 0.10888247), 224),
    XrvWeights("densenet121-res224-rsna", "xrv_densenet121", _RELEASE + "kaggle" + _D121,
               _mask("000000001000000010"),
               (NAN,) * 8 + (0.13486601,) + (NAN,) * 7 + (0.13511065, NAN), 224),
    XrvWeights("densenet121-res224-mimic_nb", "xrv_densenet121", _RELEASE + "mimic_nb" + _D121, _CHEX,
               (0.08558747, 0.011884617, NAN, 0.0040595434, 0.010733786, NAN, NAN, 0.118761964, 0.022924708, NAN,
                0.06358637, NAN, NAN, NAN, 0.022143636, 0.017476924, 0.1258702, 0.014020768), 224),
    XrvWeights("densenet121-res224-mimic_ch", "xrv_densenet121", _RELEASE + "mimic_ch" + _D121, _CHEX,
               (0.09121389, 0.010573786, NAN, 0.005023008, 0.003698257, NAN, NAN, 0.08001232, 0.037242252, NAN,
                0.05006329, NAN, NAN, NAN, 0.019866971, 0.03823637, 0.11303808, 0.0069147074), 224),
    XrvWeights("resnet50-res512-all", "xrv_resnet50", _RELEASE + "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt",
               XRV_TARGETS, (0.51570356, 0.50444704, 0.53787947, 0.50723547, 0.5025118, 0.5035252, 0.5038076,
                             0.51862943, 0.5078151, 0.50724894, 0.5056339, 0.510706, 0.5053923, 0.5020846, NAN,
                             0.5080557, 0.5138526, NAN), 512),
)}


def xrv_weight_names() -> list[str]:
    """Known weight names (``xrv:<name>``)."""
    return list(XRV_WEIGHTS)


def _lookup(name: str) -> XrvWeights:
    key = name.strip()
    for cand in (key, f"densenet121-res224-{key}"):
        if cand in XRV_WEIGHTS:
            return XRV_WEIGHTS[cand]
    raise PretrainedWeightsError(f"unknown torchxrayvision weights {name!r}; known: {', '.join(XRV_WEIGHTS)}")


def xrv_cache_dir() -> Path:
    """Where ``xrv:<name>`` files are kept: ``$CHESTDX_XRV_CACHE`` or ``~/.cache/chestdx/xrv``."""
    return Path(os.environ.get("CHESTDX_XRV_CACHE") or "~/.cache/chestdx/xrv").expanduser()


def _download(url: str, dst: Path) -> None:
    """Fetch ``url`` to ``dst`` (torch.hub writes a temp file and moves it, so no partial file is left)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), progress=True)


def fetch_xrv_file(weights: XrvWeights) -> Path:
    """The cached file of ``weights``; downloaded from torchxrayvision's URL if absent."""
    dst = xrv_cache_dir() / weights.file_name
    if dst.is_file():
        return dst
    try:
        _download(weights.url, dst)
    except Exception as exc:  # offline machines end here: say what to do instead
        raise PretrainedWeightsError(
            f"xrv:{weights.name}: could not download {weights.url} ({type(exc).__name__}: {exc}). Offline? "
            f"Download that file on a machine with internet and copy it to {dst}, or pass "
            f"--set model.pretrained=/path/{weights.file_name}") from exc
    return dst


class _Inert:
    """Placeholder for a pickled module class: unpickling only fills its ``__dict__``; it has no methods."""

    dump_patches = False  # read by torch's legacy loader when it compares the pickled class source


_INERT_PREFIXES = ("torchxrayvision.", "torch.nn.modules.")


def _tensor_globals() -> dict[str, object]:
    """The globals torch itself allows under ``weights_only=True`` (tensor/storage rebuilders, OrderedDict...)."""
    from torch import _weights_only_unpickler as wo

    return dict(wo._get_allowed_globals())


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only torch's weights_only globals and, as ``_Inert``, module classes of xrv / torch.nn."""

    def find_class(self, module: str, name: str) -> object:
        # the Python 2 names of protocol-2 pickles (__builtin__.set), as pickle.Unpickler.find_class maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        allowed = _tensor_globals()
        if full in allowed:
            return allowed[full]
        if full.startswith(_INERT_PREFIXES):
            return _Inert
        raise pickle.UnpicklingError(f"refused global {full}")


class _RestrictedPickle:
    """A ``pickle_module`` for ``torch.load``: its ``Unpickler`` is the restricted one."""

    __name__ = "chestdx_restricted_pickle"
    Unpickler = _RestrictedUnpickler

    @staticmethod
    def load(f, **kwargs):
        return _RestrictedUnpickler(f, **kwargs).load()


def _load_pickled_module(p: Path) -> object:
    """``torch.load`` of a pickled module (zip or legacy format) through the restricted unpickler."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SourceChangeWarning: the placeholder's source is not the class's
            return torch.load(p, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)
    except pickle.UnpicklingError as exc:
        raise PretrainedWeightsError(
            f"{p}: {exc}: the pickle refers to something that is neither a tensor nor a torchxrayvision / "
            "torch.nn module class; refusing to unpickle it (a pickle can run code). Where torchxrayvision is "
            "installed, save a plain state dict instead: torch.save(model.state_dict(), 'file.pt')") from exc
    except Exception as exc:  # corrupt / not a torch file
        raise PretrainedWeightsError(f"{p}: cannot read weights ({type(exc).__name__}: {exc})") from exc


def _module_state(obj: _Inert, where: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """State dict of a pickled module read into placeholders (what ``nn.Module.state_dict`` would give)."""
    d = vars(obj)
    skip = set(d.get("_non_persistent_buffers_set") or ())
    out: dict[str, torch.Tensor] = {}
    for kind in ("_parameters", "_buffers"):
        for name, t in (d.get(kind) or {}).items():
            if t is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise PretrainedWeightsError(f"{where}: {prefix}{name} is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t.detach()
    for name, child in (d.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _Inert):
            raise PretrainedWeightsError(f"{where}: submodule {prefix}{name} is a {type(child).__name__}")
        out.update(_module_state(child, where, f"{prefix}{name}."))
    return out


def read_xrv_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a torchxrayvision ``.pt`` (state dict or pickled module), never running pickled code."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PretrainedWeightsError(f"pretrained weights file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)  # a state dict (the ResNet release file)
    except pickle.UnpicklingError:
        obj = _load_pickled_module(p)  # a whole pickled model (the DenseNet release files)
    except Exception as exc:  # corrupt / not a torch file
        raise PretrainedWeightsError(f"{p}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    state = _module_state(obj, str(p)) if isinstance(obj, _Inert) else _unwrap(obj, str(p))
    if not state:
        raise PretrainedWeightsError(f"{p}: no tensors found")
    # an ``xrv.models.ResNet`` wrapper's own state dict nests torchvision's resnet under ``model.``
    if all(k.startswith("model.") or k == "op_threshs" for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    return state


@dataclass
class XrvSource:
    """A loaded torchxrayvision state dict and what is known about it."""

    state: dict[str, torch.Tensor]
    source: str                        # URL (xrv:<name>) or the local path
    spec: str                          # what the user passed
    weights: XrvWeights | None = None  # None: a local file of unknown name (default target order assumed)
    notes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> tuple[str, ...]:
        """The 18 output names ("" = untrained) in classifier order."""
        return self.weights.labels if self.weights else XRV_TARGETS

    @property
    def op_threshs(self) -> tuple[float, ...] | None:
        return self.weights.op_threshs if self.weights else None

    @property
    def arch(self) -> str:
        """``xrv_densenet121`` or ``xrv_resnet50``, from the name or the key layout."""
        if self.weights:
            return self.weights.arch
        return "xrv_resnet50" if "layer1.0.conv1.weight" in self.state else "xrv_densenet121"


def load_xrv_source(spec: str | os.PathLike, arch: str | None = None) -> XrvSource:
    """Resolve ``xrv:<name>`` (cache / download) or a local path; check it suits ``arch`` when given."""
    s = str(spec).strip()
    if s.lower().startswith("xrv:"):
        weights: XrvWeights | None = _lookup(s[4:])
        if arch is not None and weights.arch != arch:  # before any download
            raise PretrainedWeightsError(f"xrv:{weights.name} holds {weights.arch} weights; "
                                         f"set model.arch: {weights.arch} (not {arch})")
        path = fetch_xrv_file(weights)
        src = XrvSource(read_xrv_file(path), weights.url, s, weights)
    else:
        path = Path(s).expanduser()
        weights = next((w for w in XRV_WEIGHTS.values() if w.file_name == path.name), None)
        src = XrvSource(read_xrv_file(path), str(path), s, weights)
        if weights is None:
            src.notes.append(f"{path.name}: not a torchxrayvision release file name; assuming its outputs are "
                             f"the 18 torchxrayvision targets in their standard order")
        else:
            src.notes.append(f"{path.name}: the file of xrv:{weights.name}")
    if arch is not None and src.arch != arch:
        what = f"xrv:{weights.name}" if weights else str(path)
        raise PretrainedWeightsError(f"{what} holds {src.arch} weights; set model.arch: {src.arch} (not {arch})")
    return src


def op_threshs_of(src: XrvSource) -> Mapping[str, float] | None:
    """{xrv target: op_thresh} for the trained outputs (None for a file of unknown name)."""
    if src.op_threshs is None:
        return None
    return {t: th for t, th in zip(src.labels, src.op_threshs, strict=True) if t and not math.isnan(th)}
