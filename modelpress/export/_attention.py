"""Whether a model has attention, from its torch modules or its OpenVINO graph: what the OpenVINO exporter's
``model_type: auto`` reads to pick NNCF's transformer type."""
from __future__ import annotations

from typing import Any


def attention_in_model(model: Any) -> str | None:
    """Why the torch model has attention (its first attention module), or None."""
    import torch

    for name, module in model.named_modules() if isinstance(model, torch.nn.Module) else ():
        if isinstance(module, torch.nn.MultiheadAttention):
            return f"torch module '{name}' is an nn.MultiheadAttention"
        for attr in ("num_heads", "num_attention_heads"):
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return f"torch module '{name}' ({type(module).__name__}) has {attr}={value}"
    return None


PASS_THROUGH = {"Add", "Multiply", "Divide", "Subtract", "Convert", "Reshape", "Transpose", "Select", "Squeeze",
                "Unsqueeze", "Maximum", "Minimum"}


def _from_constant(node: Any, depth: int = 0) -> bool:
    """Whether ``node`` is a constant (through Converts, Reshapes, Transposes: a decompressed weight)."""
    kind = node.get_type_name()
    if kind == "Constant":
        return True
    if kind in ("Convert", "Reshape", "Transpose", "Subtract", "Multiply") and depth < 6:
        return all(_from_constant(v.get_node(), depth + 1) for v in node.input_values())
    return False


def _activation_matmul(node: Any, depth: int = 0) -> bool:
    """Whether a MatMul of two activations (attention scores) reaches ``node`` through elementwise ops."""
    kind = node.get_type_name()
    if kind == "MatMul":
        return not any(_from_constant(v.get_node()) for v in node.input_values())
    if kind not in PASS_THROUGH or depth >= 6:
        return False
    return any(_activation_matmul(v.get_node(), depth + 1) for v in node.input_values())


def attention_in_graph(ov_model: Any) -> str | None:
    """Why the OpenVINO model has attention (ScaledDotProductAttention, or Softmax over a MatMul of two
    activations: a classifier's Softmax over a weight MatMul does not count), or None."""
    for op in ov_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "ScaledDotProductAttention":
            return f"the IR has a ScaledDotProductAttention op ({op.get_friendly_name()})"
        if kind in ("Softmax", "SoftMax") and _activation_matmul(op.input_value(0).get_node()):
            return f"the IR has a Softmax over a MatMul of two activations ({op.get_friendly_name()})"
    return None
