"""Storage codecs for compressed artifacts (registered in ``registry.STORAGE``): each has
``encode(artifact, model, config) -> Artifact`` and ``decode(artifact) -> Path`` to a plain runnable file."""
