"""The line-by-line port of the official MNIST-1D ConvBase (greydanus/mnist1d@7878d96 notebooks/models.py:36-54),
kept once: bench/mnist1d_convbase_official.py trains it in the official loop, and tests/models/test_cnn1d.py
checks kdforge's `cnn1d` against it (same initial weights from a seed, same logits, same gradients). A reference
port, not part of the package."""
from __future__ import annotations

import torch
from torch import nn


class OfficialConvBase(nn.Module):
    """notebooks/models.py:36-54 as written there (less the print in __init__)."""

    def __init__(self, output_size: int, channels: int = 25, linear_in: int = 125) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(linear_in, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, x.shape[-1])
        h1 = self.conv1(x).relu()
        h2 = self.conv2(h1).relu()
        h3 = self.conv3(h2).relu()
        h3 = h3.view(h3.shape[0], -1)
        return self.linear(h3)
