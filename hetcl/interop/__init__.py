"""Models leaving and entering hetcl: ONNX export, safetensors and PyTorch names."""
