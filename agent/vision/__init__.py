"""Cell detection and classification with onnxruntime."""
