"""chestdx: leak-free, calibrated, explainable chest X-ray classification.

Outputs are decision support for qualified clinicians, never a diagnosis.
"""

from chestdx.labels import NIH_LABELS

__version__ = "0.1.0"
__all__ = ["NIH_LABELS", "__version__", "load"]


def load(run_dir, device: str = "cpu"):
    """Load a run directory as a :class:`chestdx.inference.Predictor`."""
    from chestdx.inference import Predictor

    return Predictor.from_run(run_dir, device=device)
