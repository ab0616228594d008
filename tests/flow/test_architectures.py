"""Architectures users bring from torchvision and timm go through fames.quantize and fames.approximate_.

torchvision's wheel from the package index does not load beside the CPU torch build here (`operator
torchvision::nms does not exist`), so the two nets are written out below, layer for layer as torchvision builds
them (widths of the ResNet-18-like net reduced for test speed): MobileNetV3-small (depthwise convolutions,
squeeze-and-excitation, hardswish, hardsigmoid, adaptive pooling, dropout) and ResNet-18 (basic blocks,
1x1 projection shortcuts).
"""

import pytest
import torch
from torch import nn

import fames


def _conv_bn_act(cin, cout, k, s, groups=1, act=nn.Hardswish):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, c, squeeze):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.relu, self.gate = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, k, exp, cout, se, act, stride):
        super().__init__()
        layers = [] if exp == cin else [_conv_bn_act(cin, exp, 1, 1, act=act)]
        layers.append(_conv_bn_act(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcitation(exp, max(8, (exp // 4 + 4) // 8 * 8)))
        layers.append(_conv_bn_act(exp, cout, 1, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Small(nn.Module):
    # (in, kernel, expanded, out, SE, activation, stride) as torchvision's mobilenet_v3_small
    SETTINGS = [(16, 3, 16, 16, True, nn.ReLU, 2), (16, 3, 72, 24, False, nn.ReLU, 2),
                (24, 3, 88, 24, False, nn.ReLU, 1), (24, 5, 96, 40, True, nn.Hardswish, 2),
                (40, 5, 240, 40, True, nn.Hardswish, 1), (40, 5, 240, 40, True, nn.Hardswish, 1),
                (40, 5, 120, 48, True, nn.Hardswish, 1), (48, 5, 144, 48, True, nn.Hardswish, 1),
                (48, 5, 288, 96, True, nn.Hardswish, 2), (96, 5, 576, 96, True, nn.Hardswish, 1),
                (96, 5, 576, 96, True, nn.Hardswish, 1)]

    def __init__(self, num_classes=10):
        super().__init__()
        blocks = [_conv_bn_act(3, 16, 3, 2)] + [InvertedResidual(*s) for s in self.SETTINGS]
        self.features = nn.Sequential(*blocks, _conv_bn_act(96, 576, 1, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1024, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + idt)


class ResNet18(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128), num_classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0])
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@pytest.mark.parametrize("net", [MobileNetV3Small, ResNet18])
def test_quantize_and_approximate_a_borrowed_architecture(net):
    torch.manual_seed(0)
    model = net().eval()
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    x, y = torch.rand(48, 3, 32, 32), torch.randint(0, 10, (48,))
    fames.quantize(model, "W4A4")
    fames.calibrate_ptq(model, [(x[:32], y[:32])])
    config = fames.FamesConfig(
        budget=[0.8, 0.6],
        estimator=fames.EstimatorConfig(samples=16, validate=False),
        calibration=None,
    )
    result = fames.approximate_(model, (x[:32], y[:32]), library="generate", config=config, eval_data=(x[32:], y[32:]),
                                families=["trunc", "perf"], progress=False)
    assert [layer["name"] for layer in result.layers] == names  # every Conv2d/Linear is a candidate layer
    feasible = [r for r in result.rows if not r.infeasible]
    assert feasible and all(r.relative_energy <= r.budget + 1e-9 for r in feasible)
    assert set(result.assignment) == set(names)
    assert torch.isfinite(model(x[32:])).all()
