#!/usr/bin/env python3
"""test_unseen.py DATA.h5: a network ccq has never seen, end to end.

Builds an architecture unlike the reference models (strided 3x3 stem,
ceil-mode padded max-pool, a dilated 5x5 residual branch, a BatchNorm after
the residual Add that no convolution can absorb, a padded average pool that
does not count padding, a 1x1 conv with bias, x.view(N, -1) and dropout),
trains it briefly on Fashion-MNIST with a fixed seed, exports it twice
through ONNX (BatchNorm kept as nodes, and folded by the exporter's
constant folding), converts both with onnx2ccq, and requires ccq's float
evaluation to reproduce PyTorch's test accuracy to 0.01 points and its logits
within 1e-4 relative error on every test image."""
import json
import os
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ccqtest import Checks, ccq_binary, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import ccq_sim  # noqa: E402
import ccq_torch as ct  # noqa: E402

data = sys.argv[1]
ccq = ccq_binary()
t = Checks("unseen")


class Unseen(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 12, 3, stride=2, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(12)
        self.branch = nn.Conv2d(12, 12, 5, padding=4, dilation=2)
        self.bn_post = nn.BatchNorm2d(12)
        self.pw = nn.Conv2d(12, 24, 1)
        self.fc1 = nn.Linear(24 * 9 * 9, 64)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))                          # 12x14x14
        x = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)  # 12x8x8
        x = F.relu(self.bn_post(x + self.branch(x)))                 # BN after Add
        x = F.avg_pool2d(x, 2, stride=1, padding=1, count_include_pad=False)  # 12x9x9
        x = F.relu(self.pw(x))
        x = x.view(x.size(0), -1)
        return self.fc2(self.drop(F.relu(self.fc1(x))))


torch.manual_seed(5)
torch.set_num_threads(2)
xtr_u8, ytr = ct.load_split(data, "train")
xte_u8, yte = ct.load_split(data, "test")
mean, std = (0.3,), (0.35,)
xtr = ct.normalise(xtr_u8[:12000], mean, std)
ytr = torch.as_tensor(ytr[:12000])
model = Unseen()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
model.train()
for i in range(0, len(xtr), 64):
    loss = F.cross_entropy(model(xtr[i:i + 64]), ytr[i:i + 64])
    opt.zero_grad()
    loss.backward()
    opt.step()
model.eval()
with torch.no_grad():
    want = model(ct.normalise(xte_u8, mean, std)).numpy()
torch_acc = 100.0 * (want.argmax(1) == yte).mean()
t.check("the unseen net learned something", torch_acc > 70, f"{torch_acc:.2f}%")

for keep_bn in (True, False):
    label = "bn kept" if keep_bn else "bn folded by exporter"
    with tempfile.TemporaryDirectory() as d:
        mpath, lpath = os.path.join(d, "unseen.h5"), os.path.join(d, "logits.h5")
        ct.export_ccq(model, (1, 28, 28), mpath, mean, std, "unseen", keep_bn=keep_bn)
        rc, so, se = run([ccq, "inspect", mpath])
        n_bn = so.count(" batchnorm ")
        t.check(f"{label}: batchnorm nodes", (n_bn == 2) if keep_bn else (n_bn == 1), so)
        rc, so, se = run([ccq, "eval", mpath, "--data", data, "--float", "--json", "--save-logits", lpath])
        t.check(f"{label}: eval runs", rc == 0, se)
        r = json.loads(so)
        with h5py.File(lpath, "r") as f:
            got = f["logits"][...]
        rel = (np.abs(got - want).max(1) / np.abs(want).max(1)).max()
        print(f"{label}: ccq {r['accuracy']:.2f}%, torch {torch_acc:.2f}%, worst logit error {rel:.2e}")
        t.check(f"{label}: accuracy", abs(r["accuracy"] - torch_acc) <= 0.01 + 1e-9, f"{r['accuracy']} vs {torch_acc}")
        t.check(f"{label}: logits", rel <= 1e-4, f"{rel:.3g}")
# The integer engine on the same unseen graph (standalone BatchNorm after a
# residual Add, ceil-mode max-pool, avg-pool without padding counted):
# agreement with the float simulation and accuracy near float at w8a8.
with tempfile.TemporaryDirectory() as d:
    mpath, qpath, lpath = (os.path.join(d, n) for n in ("unseen.h5", "q.h5", "l.h5"))
    ct.export_ccq(model, (1, 28, 28), mpath, mean, std, "unseen", keep_bn=True)
    rc, so, se = run([ccq, "quantize", mpath, "--data", data, "--wbits", "8", "-o", qpath])
    t.check("integer: quantize", rc == 0, se)
    rc, so, se = run([ccq, "eval", qpath, "--data", data, "--json", "--limit", "1000", "--save-logits", lpath])
    t.check("integer: eval", rc == 0, se)
    r = json.loads(so)
    with h5py.File(lpath, "r") as f:
        got = f["logits_int"][...]
    sim = ccq_sim.run(ccq_sim.load(qpath), xte_u8[:1000])
    agree = (sim.argmax(1) == got.argmax(1)).mean() * 100
    facc = 100.0 * (want[:1000].argmax(1) == yte[:1000]).mean()
    print(f"integer w8a8: {r['accuracy']:.2f}% (float {facc:.2f}%), simulation agrees on {agree:.1f}%")
    t.check("integer: simulation agreement", agree >= 99.5, f"{agree:.2f}")
    t.check("integer: w8a8 within 1 point of float", abs(r["accuracy"] - facc) <= 1.0, f"{r['accuracy']} vs {facc}")
t.finish()
