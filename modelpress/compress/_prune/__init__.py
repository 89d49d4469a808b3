"""Pruning internals: policy (how many channels go where), unstructured masks, counting."""
