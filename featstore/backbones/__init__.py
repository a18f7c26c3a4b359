"""Backbones: the Keras applications by name, backbone sources and recipes, their official ImageNet
weight files (state, downloads, imports) and the ONNX export."""
