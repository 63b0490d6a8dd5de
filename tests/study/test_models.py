"""Model shapes, layer order (registration == forward), layer counts and parameter counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from htr_utils.layers import layer_groups
from htr_utils.study.models import MODELS, LeNet, build_model, num_parameters

# Small widths keep the test fast; layer structure does not depend on width.
TEST_WIDTH = {"lenet": 1.0, "mlp": 0.5}
EXPECTED_WEIGHT_LAYERS = {
    "lenet": 5,       # conv1, conv2, fc1, fc2, fc3
    "vgg11": 9,       # 8 conv + 1 linear (CIFAR head: a single Linear)
    "vgg11_bn": 9,
    "vgg13": 11,      # 10 conv + 1 linear
    "vgg13_bn": 11,
    "resnet18": 21,   # stem + 8 blocks x 2 convs + 3 shortcut 1x1 convs + linear
    "mlp": 3,         # default depth 3
}


def _model(name: str, in_channels: int, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, in_channels, num_classes, width=TEST_WIDTH.get(name, 0.125))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape(name, in_channels):
    model = _model(name, in_channels, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(4, in_channels, 32, 32))
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_registration_order_is_forward_order(name):
    model = _model(name, 1)
    by_registration = layer_groups(model)
    by_forward = layer_groups(model, example_input=torch.randn(2, 1, 32, 32))
    assert list(by_registration.items()) == list(by_forward.items())
    assert len(by_registration) == EXPECTED_WEIGHT_LAYERS[name]
    assert all(params == [f"{layer}.weight"] for layer, params in by_registration.items())


def test_lenet_parameter_count_by_hand():
    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    def fc(fin, fout):
        return fin * fout + fout

    by_hand = conv(1, 6, 5) + conv(6, 16, 5) + fc(16 * 5 * 5, 120) + fc(120, 84) + fc(84, 10)
    assert by_hand == 61_706
    assert num_parameters(LeNet(1, 10)) == by_hand
    assert list(layer_groups(LeNet())) == ["conv1", "conv2", "fc1", "fc2", "fc3"]


@pytest.mark.parametrize("width", [0.125, 0.25])
def test_narrow_vgg11_bn_is_small(width):
    model = build_model("vgg11_bn", 1, 10, width=width)
    n = num_parameters(model)
    print(f"vgg11_bn width {width}: {n:,} parameters")
    assert len(layer_groups(model)) >= 8
    assert n < 1_000_000
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8


def test_width_scales_channels_and_never_reaches_zero():
    tiny = build_model("resnet18", 3, 10, width=0.001)
    assert all(m.out_channels == 1 for m in tiny.modules() if isinstance(m, nn.Conv2d))
    assert build_model("lenet", 1, 10, width=0.5).conv1.out_channels == 3


def test_resnet18_shortcuts_only_where_shape_changes():
    model = build_model("resnet18", 3, 10, width=0.125)
    shortcut_convs = [name for name in layer_groups(model) if "shortcut" in name]
    assert shortcut_convs == ["layer2.0.shortcut.0", "layer3.0.shortcut.0", "layer4.0.shortcut.0"]


def test_mlp_options():
    model = build_model("mlp", 1, 10, hidden=16, depth=4, activation="relu")
    assert len(layer_groups(model)) == 4
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert build_model("mlp", 1, 10, input_size=8)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="activation"):
        build_model("mlp", 1, 10, activation="swish")


def test_unknown_model_and_bad_keywords():
    with pytest.raises(ValueError, match="lenet, vgg11, vgg11_bn, vgg13, vgg13_bn, resnet18, mlp"):
        build_model("alexnet", 3, 10)
    with pytest.raises(TypeError, match="no extra arguments"):
        build_model("lenet", 1, 10, hidden=3)


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    model = build_model("vgg11_bn", 1, 10, width=0.125)
    x, y = torch.randn(32, 1, 32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
