"""The export stage: ONNX and TorchScript, the parity check, the served model."""
