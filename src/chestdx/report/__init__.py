"""Run reports: a self-contained ``report.html`` and a model card (``MODEL_CARD.md``)."""

from chestdx.report.build import build_report
from chestdx.report.model_card import NOTICE, build_model_card, card_html, card_markdown, write_model_card

__all__ = ["NOTICE", "build_model_card", "build_report", "card_html", "card_markdown", "write_model_card"]
