"""Cross-modal training: paired-phantom data, shared encoder with adapters, InfoNCE/IRM loop, LOVO
experiments, ONNX export of the mammography branch and the reference pathology bank (torch)."""
