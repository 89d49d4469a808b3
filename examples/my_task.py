"""A user task: ``modelpress run`` with ``task: my_task:task`` (this folder on PYTHONPATH).

It scores a tiny logistic-regression-like model on scikit-learn's iris data, to show the pieces a Task
needs: a model builder, input/output names, calibration, validation (decisions), test (the reported score)
and training data, and a metric.
"""
import numpy as np
import torch
from sklearn.datasets import load_iris

from modelpress.task import Batches, Task


def task() -> Task:
    data = load_iris()
    x = data.data.astype(np.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]

    def build_model():
        from modelpress.train import TrainConfig, fit

        model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        return fit(model, Batches({"x": x[:120]}, y[:120], batch_size=16, shuffle=True), TrainConfig(epochs=30, lr=1e-2))

    return Task(name="my-task", build_model=build_model, input_names=("x",), output_names=("logits",),
                calib_data=Batches({"x": x[:64]}),
                val_data=Batches({"x": x[120:135]}, y[120:135]), test_data=Batches({"x": x[135:]}, y[135:]),
                train_data=Batches({"x": x[:120]}, y[:120], batch_size=16, shuffle=True), num_classes=3)
