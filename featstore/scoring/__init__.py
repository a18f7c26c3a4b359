"""Scoring new images with a head or a fine-tuned network (`score`, `predict`), and deployable
ONNX files (`export_head`)."""
