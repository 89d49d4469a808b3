"""A runtime that dies natively (SIGABRT) when it loads a model: stands in for a crashing runtime."""
import os

FORMATS = ("onnx",)


def available() -> bool:
    return True


def why_unavailable() -> str:
    return ""


def load(artifact, config):
    os.abort()
