"""Writing models for other tools.

- ``onnx``: ONNX export of a U-Net (dynamic spatial size).
- ``bioimageio``: a BioImage Model Zoo package (spec 0.5: state dict, TorchScript and ONNX weights, test
  tensors, cover, card), checked with bioimageio.core's test before it is renamed into place.
"""
