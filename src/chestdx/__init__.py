"""chestdx: leak-free, calibrated, explainable chest X-ray classification.

Outputs are decision support for qualified clinicians, never a diagnosis.
"""

from chestdx.labels import NIH_LABELS

__version__ = "0.2.0"
__all__ = ["NIH_LABELS", "__version__", "load"]


def load(path, device: str = "cpu", **kwargs):
    """A run directory or an exported ``.onnx`` file as a :class:`chestdx.inference.Predictor`.

    Keyword options (``trust``, ``gate``, ``policy``, ``threads``): see :func:`chestdx.inference.load`.
    """
    from chestdx.inference import load as _load

    return _load(path, device=device, **kwargs)
