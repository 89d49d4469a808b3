"""Quantization internals (``modelpress.compress.quantize`` is the entry point).

- ``modelpress.compress.quantizer`` (public, also used by storage codecs): the uniform affine quantizer.
- ``layers``: layer selection, BatchNorm folding, fake-quantized layers, streaming calibration (torch side).
- ``mixed``: layer sensitivity and accuracy-aware fallback.
- ``flow``: ``apply`` step by step.
- ``qdq``, ``dynamic``: the ONNX rewrites (static QDQ, dynamic int8) on ``modelpress.onnxgraph``; ``hook`` is the
  ``OnnxRewrite`` the exporter runs.
- ``explain``: why int8 came out slower (from the op precisions the runtime read off the artifact).
"""
