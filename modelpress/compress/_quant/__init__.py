"""Quantization internals (``modelpress.compress.quantize`` is the entry point).

- ``quantizer``: the uniform affine quantizer (weights per tensor/channel/group, u8 activations).
- ``layers``: layer selection, BatchNorm folding, fake-quantized layers, streaming calibration (torch side).
- ``mixed``: layer sensitivity and accuracy-aware fallback.
- ``flow``: ``apply`` step by step.
- ``graph``, ``qdq``, ``dynamic``: the ONNX rewrites (static QDQ, dynamic int8); ``hook`` runs them at export.
- ``preflight``: which ops ONNX Runtime runs in int8, and why int8 came out slower.
"""
