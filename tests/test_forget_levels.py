"""AccuracyAtForgetLevels: the step and accuracies recorded when the forget accuracy first reaches each level."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from hf_structguard.trainer import AccuracyAtForgetLevels


class ScriptedModel(nn.Module):
    """Predicts ``table[id]`` for an image whose first pixel holds ``id``; the test edits ``table`` per step."""

    def __init__(self, size: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(size, dtype=torch.long), requires_grad=False)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        ids = x[:, 0, 0, 0].long()
        return SimpleNamespace(logits=nn.functional.one_hot(self.table[ids], 2).float())


def _images(ids):
    images = torch.zeros(len(ids), 3, 2, 2)
    images[:, 0, 0, 0] = torch.tensor(ids, dtype=torch.float)
    return images


def test_accuracy_at_forget_levels_records_first_step_of_each_level():
    # ids 0-3: forget (label 1), 4-7: test (label 1), 8-9: retain (label 1)
    model = ScriptedModel(10).train()
    ones = lambda n: torch.ones(n, dtype=torch.long)  # noqa: E731
    callback = AccuracyAtForgetLevels((_images(range(4)), ones(4)),
                                      {"A_test": (_images(range(4, 8)), ones(4)), "A_r": (_images([8, 9]), ones(2))})
    forget_correct = [4, 4, 3, 1, 2, 1, 0, 0]  # A_f 100 (start), 100, 75, 25 (skips 50), 50, 25, 0, 0
    test_correct = [4, 3, 3, 2, 2, 1, 1, 0]
    state = SimpleNamespace(global_step=0)
    for step, (nf, nt) in enumerate(zip(forget_correct, test_correct)):
        model.table.data.zero_()
        model.table.data[:nf] = 1
        model.table.data[4 : 4 + nt] = 1
        model.table.data[8] = 1  # A_r 50 throughout
        state.global_step = step
        if step == 0:
            callback.on_train_begin(None, state, None, model=model)
        else:
            callback.on_step_end(None, state, None, model=model)
    records = callback.records
    assert set(records) == {"start", "75", "50", "25", "0"}
    assert records["start"] == {"step": 0, "A_f": 100.0, "A_test": 100.0, "A_r": 50.0}
    assert records["75"] == {"step": 2, "A_f": 75.0, "A_test": 75.0, "A_r": 50.0}
    assert records["50"] == records["25"] == {"step": 3, "A_f": 25.0, "A_test": 50.0, "A_r": 50.0}
    assert records["0"] == {"step": 6, "A_f": 0.0, "A_test": 25.0, "A_r": 50.0}
    assert not any(model.modes) and model.training  # evaluated in eval mode, mode restored
    assert callback.seconds > 0


def test_level_met_at_step_zero_is_recorded_at_step_zero():
    model = ScriptedModel(4)
    labels = torch.tensor([1, 1, 0, 0])
    callback = AccuracyAtForgetLevels((_images(range(4)), labels), {}, levels=(75, 50))
    callback.on_train_begin(None, SimpleNamespace(global_step=0), None, model=model)  # predicts 0: A_f 50
    assert callback.records == {"start": {"step": 0, "A_f": 50.0}, "75": {"step": 0, "A_f": 50.0},
                                "50": {"step": 0, "A_f": 50.0}}
