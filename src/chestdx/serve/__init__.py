"""Serving on top of :class:`chestdx.inference.Predictor`.

Modules (imported on demand; this package itself imports nothing, so the torch-free ones stay torch-free):
``batch`` (``chestdx predict``), ``app`` + ``static/index.html`` (web app), ``uploads`` (in-memory multipart),
``images`` (PNG encodings), ``guard`` (admission, origin checks), ``server`` (uvicorn in a thread), ``onnx_export``
(torch), ``distributed`` (Lightning DDP batch prediction).
"""
