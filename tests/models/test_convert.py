"""Converting RepDistiller / mdistiller checkpoints: a port of their model definitions (below, in the test only)
makes a checkpoint the way train_teacher.py saves it; the converted kdforge model must give the same logits."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdforge.data.types import DataSpec
from kdforge.errors import CheckpointError, ConfigError
from kdforge.models import load_model_with_info
from kdforge.models.convert import convert_checkpoint, main, name_from_path


# ---- a port of HobbitLong/RepDistiller@b84f547 models/resnet.py (BasicBlock ResNets; mdistiller's is the same) ----
class RDBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, is_last=False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        preact = out
        out = F.relu(out)
        return (out, preact) if self.is_last else out


class RDResNet(nn.Module):
    def __init__(self, depth, num_filters, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(RDBasicBlock, num_filters[1], n)
        self.layer2 = self._make_layer(RDBasicBlock, num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(RDBasicBlock, num_filters[3], n, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(num_filters[3] * RDBasicBlock.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, is_last=(blocks == 1))]
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            layers.append(block(self.inplanes, planes, is_last=(i == blocks - 1)))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x, _ = self.layer1(x)
        x, _ = self.layer2(x)
        x, _ = self.layer3(x)
        x = self.avgpool(x)
        return self.fc(x.view(x.size(0), -1))


# ---- a port of RepDistiller models/wrn.py ----
class RDWideBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, dropRate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = dropRate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class RDNetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[RDWideBlock(i == 0 and in_planes or out_planes, out_planes,
                                                 i == 0 and stride or 1) for i in range(nb_layers)])

    def forward(self, x):
        return self.layer(x)


class RDWideResNet(nn.Module):
    def __init__(self, depth, num_classes, widen_factor=1):
        super().__init__()
        n_channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, n_channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = RDNetworkBlock(n, n_channels[0], n_channels[1], 1)
        self.block2 = RDNetworkBlock(n, n_channels[1], n_channels[2], 2)
        self.block3 = RDNetworkBlock(n, n_channels[2], n_channels[3], 2)
        self.bn1 = nn.BatchNorm2d(n_channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(n_channels[3], num_classes)
        self.nChannels = n_channels[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.avg_pool2d(self.relu(self.bn1(out)), 8)
        return self.fc(out.view(-1, self.nChannels))


# ---- a port of RepDistiller models/vgg.py (vgg8_bn = cfg 'S' with batch norm) ----
class RDVGG(nn.Module):
    def __init__(self, cfg, num_classes):
        super().__init__()
        self.block0 = self._make_layers(cfg[0], 3)
        self.block1 = self._make_layers(cfg[1], cfg[0][-1])
        self.block2 = self._make_layers(cfg[2], cfg[1][-1])
        self.block3 = self._make_layers(cfg[3], cfg[2][-1])
        self.block4 = self._make_layers(cfg[4], cfg[3][-1])
        self.pool0, self.pool1, self.pool2, self.pool3 = (nn.MaxPool2d(kernel_size=2, stride=2) for _ in range(4))
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        h = x.shape[2]
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if h == 64:
            x = self.pool3(x)
        x = self.pool4(F.relu(self.block4(x)))
        return self.classifier(x.view(x.size(0), -1))

    @staticmethod
    def _make_layers(cfg, in_channels):
        layers = []
        for v in cfg:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_channels = v
        return nn.Sequential(*layers[:-1])


PORTS = {
    "resnet20": lambda: RDResNet(20, [16, 16, 32, 64], num_classes=100),
    "resnet8x4": lambda: RDResNet(8, [32, 64, 128, 256], num_classes=100),
    "resnet32x4": lambda: RDResNet(32, [32, 64, 128, 256], num_classes=100),
    "wrn_16_2": lambda: RDWideResNet(16, 100, widen_factor=2),
    "wrn_40_2": lambda: RDWideResNet(40, 100, widen_factor=2),
    "vgg8": lambda: RDVGG([[64], [128], [256], [512], [512]], num_classes=100),
}


def _trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics (not the init's 0/1), so that every buffer matters in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.num_batches_tracked.fill_(1000)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, math.sqrt(1.0 / fan_in), generator=g)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=g)
    return model.eval()


def _save_repdistiller(model: nn.Module, path: Path, legacy: bool = False, old_bn: bool = False,
                       data_parallel: bool = False) -> Path:
    """As train_teacher.py saves it: {'epoch', 'model', 'accuracy', 'optimizer'}; `legacy` is the pre-1.6 file
    format, `old_bn` drops num_batches_tracked (PyTorch < 0.4.1), `data_parallel` prefixes `module.`."""
    state = model.state_dict()
    if old_bn:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if data_parallel:
        state = {f"module.{k}": v for k, v in state.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(79.42), "optimizer": optimizer.state_dict()},
               path, _use_new_zipfile_serialization=not legacy)
    return path


CASES = [  # model, legacy file format, no num_batches_tracked, DataParallel prefix
    ("resnet20", False, False, False),
    ("resnet8x4", True, True, False),
    ("resnet32x4", False, False, True),
    ("wrn_16_2", True, False, False),
    ("wrn_40_2", False, True, True),
    ("vgg8", False, False, False),
]


@pytest.mark.parametrize(("name", "legacy", "old_bn", "data_parallel"), CASES, ids=[c[0] for c in CASES])
def test_converted_model_gives_the_official_logits(tmp_path: Path, name: str, legacy: bool, old_bn: bool,
                                                   data_parallel: bool) -> None:
    official = _trained_like(PORTS[name]())
    ckpt = _save_repdistiller(official, tmp_path / "save" / "models" / f"{name}_vanilla" / "ckpt_epoch_240.pth",
                              legacy, old_bn, data_parallel)
    out = convert_checkpoint(ckpt, tmp_path / "teacher")  # the model name comes from the folder
    model, cfg, spec, extra = load_model_with_info(out)
    assert cfg.name == name and spec == DataSpec("cifar100", (3, 32, 32), 100)
    info = extra["converted_from"]
    assert (info["epoch"], info["accuracy"]) == (240, pytest.approx(79.42))
    assert info["num_batches_tracked_filled"] == (sum(isinstance(m, nn.BatchNorm2d) for m in official.modules())
                                                  if old_bn else 0)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = official(x), model(x)
    assert expected.std() > 0.1  # the logits are not degenerate
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_model_names_follow_repdistillers_get_teacher_name(tmp_path: Path) -> None:
    assert name_from_path(Path("save/models/wrn_40_2_vanilla/ckpt_epoch_240.pth")) == "wrn_40_2"
    assert name_from_path(Path("download_ckpts/cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth")) == "resnet32x4"
    resnet50 = _save_repdistiller(nn.Linear(2, 2), tmp_path / "ResNet50_vanilla" / "ckpt_epoch_240.pth")
    with pytest.raises(ConfigError, match=r"^model 'ResNet50' has no kdforge counterpart to convert to; convertible"):
        convert_checkpoint(resnet50, tmp_path / "out")
    loose = _save_repdistiller(_trained_like(PORTS["resnet8x4"]()), tmp_path / "student_best.pth")
    with pytest.raises(ConfigError, match=r"cannot tell the model from the folder name"):
        convert_checkpoint(loose, tmp_path / "out")
    assert convert_checkpoint(loose, tmp_path / "out", model="resnet8x4", data="cifar100").is_dir()
    with pytest.raises(CheckpointError, match=r"already holds a saved model"):
        convert_checkpoint(loose, tmp_path / "out", model="resnet8x4")


def test_another_architecture_is_refused_in_one_line(tmp_path: Path) -> None:
    ckpt = _save_repdistiller(_trained_like(PORTS["resnet20"]()), tmp_path / "resnet20_vanilla" / "ckpt.pth")
    with pytest.raises(CheckpointError) as e:
        convert_checkpoint(ckpt, tmp_path / "out", model="resnet32")
    # 2 more blocks per stage x 3 stages x (2 convs + 2 BatchNorms of 5 tensors each)
    assert str(e.value) == (f"{ckpt}: not a resnet32 state dict: 72 keys of kdforge's resnet32 missing (first: "
                            "layer1.3.conv1.weight); if the model is another, give its name")
    wide = PORTS["resnet8x4"]()
    with torch.no_grad():
        wide.conv1.weight = nn.Parameter(torch.zeros(32, 3, 5, 5))
    ckpt = _save_repdistiller(wide, tmp_path / "resnet8x4_vanilla" / "ckpt.pth")
    with pytest.raises(CheckpointError, match=r"conv1.weight has shape \(32, 3, 5, 5\), kdforge's resnet8x4 "
                                              r"expects \(32, 3, 3, 3\)$"):
        convert_checkpoint(ckpt, tmp_path / "out")


def test_pickles_beyond_weights_are_refused_and_never_run(tmp_path: Path) -> None:
    last = tmp_path / "resnet8x4_vanilla" / "resnet8x4_last.pth"
    last.parent.mkdir()
    torch.save({"opt": argparse.Namespace(model="resnet8x4"), "model": PORTS["resnet8x4"]().state_dict()}, last)
    with pytest.raises(CheckpointError) as e:
        convert_checkpoint(last, tmp_path / "out")
    assert str(e.value).startswith(f"{last}: refused by torch.load(weights_only=True): it pickles argparse.Namespace;")
    assert "\n" not in str(e.value)

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return open, (str(marker), "w")

    evil = tmp_path / "resnet8x4_vanilla" / "ckpt_epoch_240.pth"
    torch.save({"model": {"fc.weight": torch.zeros(1)}, "x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused by torch.load"):
        convert_checkpoint(evil, tmp_path / "out")
    assert not marker.exists()


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _save_repdistiller(_trained_like(PORTS["wrn_16_2"]()), tmp_path / "wrn_16_2_vanilla" / "ckpt_epoch_240.pth")
    assert main([str(ckpt), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert main([str(tmp_path / "nothing.pth"), str(tmp_path / "out2"), "--model", "wrn_16_2"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing.pth'}: no such checkpoint file\n"
