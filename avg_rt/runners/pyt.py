"""PyTorch eager runner: a checkpoint (or a live Generator) on CPU or CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import torch

from avg_rt.model import Generator


class TorchRunner:
    """Runs a Generator in inference mode.

    `model` is a checkpoint path (loaded in `__enter__`) or a Generator, used as it is (moved to
    `device`). `compile=True` wraps the forward in `torch.compile`.
    """

    def __init__(
        self,
        model: str | Path | Generator,
        device: torch.device | str = "cpu",
        compile: bool = False,
    ):
        self.source = model
        self.device = torch.device(device)
        self.compile = compile
        self.name = f"torch-{self.device.type}" + ("-compiled" if compile else "")
        self.graph_safe = not compile  # eager steps can be captured as CUDA graphs
        self.history_len = model.cfg.history_len if isinstance(model, Generator) else 0
        self.model: Generator | None = None

    def __enter__(self) -> Self:
        if isinstance(self.source, Generator):
            model = self.source.to(self.device)
        else:
            from avg_rt.checkpoint import load_generator

            model, _ = load_generator(self.source, self.device)
        self.model = model
        self.history_len = model.cfg.history_len
        self._forward = torch.compile(model) if self.compile else model
        return self

    def __exit__(self, *exc: object) -> None:
        self.model = None
        self._forward = None

    @torch.inference_mode()
    def predict(self, history: torch.Tensor) -> torch.Tensor:
        """See `avg_rt.runners.Runner.predict`."""
        assert self.model is not None, "use the runner inside a `with` block"
        return self._forward(history)
