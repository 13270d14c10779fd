"""Training: config presets, losses, the LightningModule and ``fit``."""
