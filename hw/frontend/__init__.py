"""Front end: network description (torch.nn-like), ONNX import, post-training quantization."""
