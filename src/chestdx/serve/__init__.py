"""Serving: the Predictor (run dir -> probabilities, findings, heatmaps), the web app, ONNX export."""
