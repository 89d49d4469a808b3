"""Inputs are hashed before and after every command and never change."""
from pathlib import Path

import numpy as np

import torch

from modelpress import cli
from modelpress.artifact import sha256

ROOT = Path(__file__).resolve().parents[2]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_command_leaves_inputs_untouched(tmp_path, digits_model):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "r.yaml").write_text("task: digits\nbench: {batch_sizes: [1], warmup: 1, rounds: 2, runs_per_round: 2}\n")
    torch.save(digits_model.state_dict(), inputs / "w.pt")
    assert cli.main(["export", "digits", str(inputs / "art"), "--model", str(inputs / "w.pt")]) == 0
    np.save(inputs / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
    before = snapshot(inputs)
    commands = [
        ["run", str(inputs / "r.yaml"), "-o", str(tmp_path / "run")],
        ["run", str(inputs / "r.yaml"), "-o", str(tmp_path / "run"), "--force"],
        ["export", "digits", str(tmp_path / "exp"), "--model", str(inputs / "w.pt")],
        ["bench", str(inputs / "art"), "--rounds", "1", "--batch-sizes", "1"],
        ["run", str(inputs / "missing.yaml")],  # a failing command changes nothing either
        ["package", str(inputs / "art"), "-o", str(tmp_path / "bundle")],
        ["predict", str(tmp_path / "bundle"), str(inputs / "x.npy"), "-o", str(tmp_path / "y.npy")],
        # outputs that name an input, or lie inside or around one, are refused (with --force too)
        ["predict", str(tmp_path / "bundle"), str(inputs / "x.npy"), "-o", str(inputs / "x.npy"), "--force"],
        ["package", str(inputs / "art"), "-o", str(inputs / "art" / "bundle")],
        ["export", "digits", str(inputs / "art"), "--model", str(inputs / "art" / "model.onnx"), "--force"],
        ["run", str(inputs / "r.yaml"), "-o", str(inputs), "--force"],
        ["export", "digits", str(inputs), "--model", str(inputs / "w.pt"), "--force"],
    ]
    for argv in commands:
        cli.main(argv)
        assert snapshot(inputs) == before, argv
