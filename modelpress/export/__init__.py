"""modelpress.export: one module per format (``registry.EXPORTERS``), each with ``Config`` and ``export``."""
from __future__ import annotations

import dataclasses
from typing import Any


def fp32_config(config: Any) -> Any:
    """An exporter's config with its own int8 options off (OpenVINO's and LiteRT's ``int8``, OpenVINO's
    ``keep_float``): the fp32 baseline export, and layers timed in float."""
    if not getattr(config, "int8", False):
        return config
    return dataclasses.replace(config, int8=False, **({"keep_float": ()} if hasattr(config, "keep_float") else {}))
