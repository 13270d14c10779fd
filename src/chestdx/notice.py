"""The one decision-support notice shown with every output (CLI, API, page, report, model card, exports)."""

DISCLAIMER = ("Decision support only — not a diagnosis. Probabilities from a research model, for review by a "
              "qualified clinician, who must read every image.")
