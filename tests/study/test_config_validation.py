"""TrainConfig refuses bad settings at construction, before anything is written; errors name the field and range."""
import math

import pytest

from htr_utils.study.runs import config_hash
from htr_utils.study.training import TrainConfig

BAD = [
    ("lr", math.nan, "finite number > 0"), ("lr", 0.0, "> 0"), ("lr", math.inf, "finite"), ("lr", "0.1", "finite"),
    ("htr_gamma", math.nan, "finite number >= 0"), ("htr_gamma", -1e-3, ">= 0"), ("htr_gamma", math.inf, "finite"),
    ("width", 0.0, "> 0"), ("width", -1.0, "> 0"), ("width", math.nan, "finite"),
    ("weight_decay", -1.0, ">= 0"), ("momentum", math.nan, ">= 0"), ("lr_gamma", 0.0, "> 0"),
    ("epochs", 2.5, "integer >= 1"), ("epochs", 0, "integer >= 1"), ("epochs", True, "integer"),
    ("batch_size", 32.0, "integer >= 1"), ("batch_size", -4, "integer >= 1"),
    ("train_size", 0, "integer >= 1 or None"), ("test_size", 10.5, "integer >= 1 or None"),
    ("seed", -1, "integer >= 0"), ("htr_start_epoch", 1.0, "integer >= 0"), ("curvature_every", -1, ">= 0"),
    ("val_fraction", 1.0, r"\[0, 1\)"), ("val_fraction", math.nan, r"\[0, 1\)"),
]


@pytest.mark.parametrize("field,value,allowed", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_values_name_the_field_and_the_range(field, value, allowed):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be .*{allowed}") as info:
        TrainConfig(**{field: value})
    assert repr(value) in str(info.value)


def test_unknown_names_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"TrainConfig\.dataset: unknown dataset 'cifar1'; valid: "):
        TrainConfig(dataset="cifar1")
    with pytest.raises(ValueError, match=r"TrainConfig\.model: unknown model"):
        TrainConfig(model="resnet")


def test_valid_configs_and_their_hashes_are_unchanged():
    # validation does not change a config's hash (this pins the hash under RUNS_VERSION 4;
    # a version bump changes every hash on purpose)
    assert config_hash(TrainConfig()) == "56239af52511"
    cfg = TrainConfig(dataset="digits", width=1, lr=1, train_size=None, top_k=None, milestones=(2.0,))
    assert cfg.milestones == (2,)
