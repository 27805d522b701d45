"""Train a small PyTorch network and export it to ONNX the way PyTorch does by default.

    python examples/export_torch.py OUT_DIR

The network ends in a Linear layer, so the graph outputs logits, and the exporter writes no
class names and a fixed batch of 1. triage serves it as it is: `--output-kind logits`
and `--classes` supply what the graph lacks; the fixed batch runs row by row (triage warns).
Pass `--dynamic` to export a dynamic batch axis instead, for full throughput.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

args = [a for a in sys.argv[1:] if not a.startswith("--")]
out = Path(args[0] if args else "byom")
out.mkdir(parents=True, exist_ok=True)
X, y = load_digits(return_X_y=True)
X_train, X_ref, y_train, y_ref = train_test_split(X, y, test_size=0.4, random_state=0, stratify=y)
torch.manual_seed(0)


class Digits(torch.nn.Module):
    """Scaling is part of the graph, so the model takes raw features like the others."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 16.0)


model = Digits()
opt = torch.optim.Adam(model.parameters(), lr=0.01)
Xt, yt = torch.tensor(X_train, dtype=torch.float32), torch.tensor(y_train)
for _ in range(200):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(Xt), yt).backward()
    opt.step()
dynamic = {"dynamic_axes": {"features": {0: "batch"}}} if "--dynamic" in sys.argv else {}
torch.onnx.export(model.eval(), (torch.zeros(1, 64),), str(out / "torch.onnx"), input_names=["features"],
                  output_names=["logits"], **dynamic)
np.savez(out / "reference.npz", X=X_ref, y=y_ref)
with torch.no_grad():
    accuracy = (model(torch.tensor(X_ref, dtype=torch.float32)).argmax(1).numpy() == y_ref).mean()
print(f"wrote {out / 'torch.onnx'} (holdout accuracy {accuracy:.3f}) and {out / 'reference.npz'}")
