"""Serving on top of :class:`chestdx.inference.Predictor`.

Modules (imported on demand; this package itself imports nothing, so the torch-free ones stay torch-free):
``batch`` (``chestdx predict``), ``app`` + ``static/index.html`` (web app), ``guard`` (Host / Origin checks,
bounded admission), ``uploads`` (in-memory multipart),
``images`` (PNG encodings), ``server`` (uvicorn in a thread), ``onnx_export`` (torch) and ``onnx_predictor``
(onnxruntime, no torch).
"""
