"""ccq_torch.py: PyTorch definitions shared by the training, export and test scripts.

Holds the reference architectures ("lenet", "resnet20", "mobilenet"), the input
normalisation of Fashion-MNIST, and helpers to read a ccq data file and export
a model through ONNX into a ccq model file. It does not train (see
train_reference.py) and is never imported by the C engine.
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))

# Per-channel statistics of the Fashion-MNIST train split, in units of pixel/255.
FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)


class LeNet(nn.Module):
    """Small CNN: two 5x5 conv blocks with BN and max-pool, two linear layers (~171k parameters)."""

    def __init__(self, in_ch=1, classes=10, hw=28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 16, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(32 * (hw // 4) * (hw // 4), 100)
        self.fc2 = nn.Linear(100, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            # Projection shortcut (1x1 conv + BN): keeps the graph within
            # ccq's op set (the zero-padding shortcut needs Slice/Pad).
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.short is None else self.short(x)
        return F.relu(y + s)


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20: 3 stages x 3 basic blocks, 16/32/64 channels."""

    def __init__(self, in_ch=1, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-and-excitation: global pool, 1x1 reduce + ReLU, 1x1 expand + hard-sigmoid, gate."""

    def __init__(self, c, r=4):
        super().__init__()
        self.reduce = nn.Conv2d(c, c // r, 1)
        self.expand = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6, or hard-swish with SE), 3x3 depthwise, optional SE,
    linear 1x1 projection, identity shortcut when shape allows."""

    def __init__(self, cin, cout, stride, expand, se=False):
        super().__init__()
        mid = cin * expand
        self.act = nn.Hardswish() if se else nn.ReLU6()
        self.pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        # Debian's PyTorch runs depthwise convolutions about 90x faster in channels-last layout
        # (oneDNN) than in the default one; the rest of the block is faster in the default layout.
        self.dw_channels_last = True
        self.bn2 = nn.BatchNorm2d(mid)
        self.se = SqueezeExcite(mid) if se else None
        self.project = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.act(self.bn1(self.pw(x)))
        if self.dw_channels_last and not torch.onnx.is_in_onnx_export():
            y = self.dw(y.contiguous(memory_format=torch.channels_last)).contiguous()
        else:
            y = self.dw(y)
        y = self.act(self.bn2(y))
        if self.se is not None:
            y = self.se(y)
        y = self.bn3(self.project(y))
        return x + y if self.residual else y


class MobileNet(nn.Module):
    """MobileNetV2-style network for 28x28 images: a 3x3 stem, four inverted residual blocks (the last
    two with squeeze-and-excitation and hard-swish, as in MobileNetV3), a 1x1 head with hard-swish,
    global average pool, linear."""

    def __init__(self, in_ch=1, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(
            InvertedResidual(16, 24, 2, 2),
            InvertedResidual(24, 24, 1, 4),
            InvertedResidual(24, 40, 2, 4, se=True),
            InvertedResidual(40, 40, 1, 4, se=True),
        )
        self.head = nn.Conv2d(40, 128, 1, bias=False)
        self.bn_head = nn.BatchNorm2d(128)
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        x = F.relu6(self.bn(self.stem(x)))
        x = self.blocks(x)
        x = F.hardswish(self.bn_head(self.head(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


ARCHS = {"lenet": LeNet, "resnet20": ResNet20, "mobilenet": MobileNet}


def load_split(path, split):
    """Return (images uint8 [N,C,H,W], labels int64 [N]) of one split of a ccq data file."""
    with h5py.File(path, "r") as f:
        return f[split]["images"][...], f[split]["labels"][...].astype(np.int64)


def normalise(x_u8, mean, std):
    """Exactly the float normalisation ccq applies: (pixel/255 - mean) / std, per channel."""
    x = torch.as_tensor(x_u8).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


def export_ccq(model, in_shape, out_h5, mean, std, name, keep_bn=True):
    """Export an eval-mode model to ONNX (opset 13) and convert it with onnx2ccq.py.

    keep_bn=True exports BatchNormalization nodes as they are (the model file
    then records BN explicitly, as the integer engine folds it itself)."""
    model.eval()
    with tempfile.TemporaryDirectory() as d:
        onnx_path = os.path.join(d, "model.onnx")
        dummy = torch.zeros((1,) + tuple(in_shape))
        mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
        torch.onnx.export(model, dummy, onnx_path, opset_version=13, training=mode,
                          do_constant_folding=not keep_bn,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        cmd = [sys.executable, os.path.join(HERE, "onnx2ccq.py"), onnx_path, out_h5,
               "--name", name,
               "--mean", ",".join(repr(float(v)) for v in mean),
               "--std", ",".join(repr(float(v)) for v in std)]
        subprocess.run(cmd, check=True)
