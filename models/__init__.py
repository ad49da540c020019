"""The shipped ONNX models and their model cards (package data, found via importlib.resources)."""
