"""Recursive prediction over any runner: the loop is written once, here.

To predict frame t+1 the runner sees the last `history_len` frames: real ones at first, then its
own predictions. The window lives on the runner's device in two preallocated buffers that
alternate (ping-pong), so a step never allocates and never touches the host; predictions are
clamped to [-1, 1] before they are fed back, so that precision loss (FP16 engines) cannot push
the window out of the range the model was trained on.
"""

from __future__ import annotations

import torch

from avg_rt.runners import Runner


def assert_history(history: torch.Tensor, history_len: int) -> None:
    """Check a (B, T, 3, H, W) float history with T >= history_len; raise ValueError if not."""
    if history.ndim != 5 or history.shape[2] != 3:
        raise ValueError(f"history must be (B, T, 3, H, W), got {tuple(history.shape)}")
    if history.shape[1] < history_len:
        raise ValueError(f"history has {history.shape[1]} frames, the model needs {history_len}")
    if not history.is_floating_point():
        raise ValueError(f"history must be float in [-1, 1], got {history.dtype}")


def rollout(runner: Runner, history: torch.Tensor, steps: int) -> torch.Tensor:
    """Predict `steps` frames recursively from the last frames of `history`.

    Args:
        runner: an entered Runner.
        history: (B, T, 3, H, W) float in [-1, 1], T >= runner.history_len (on any device).
        steps: number of predicted frames (>= 1).

    Returns:
        (B, steps, 3, H, W) float32 on the runner's device: the raw (unclamped) predictions.
    """
    assert_history(history, runner.history_len)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    b, _, _, h, w = history.shape
    n = runner.history_len
    dev = runner.device
    windows = [torch.empty(b, 3 * n, h, w, device=dev) for _ in range(2)]
    windows[0].copy_(history[:, -n:].reshape(b, 3 * n, h, w))
    preds = torch.empty(b, steps, 3, h, w, device=dev)
    for t in range(steps):
        cur, nxt = windows[t % 2], windows[(t + 1) % 2]
        pred = runner.predict(cur)  # (B, 3, H, W)
        preds[:, t].copy_(pred)
        nxt[:, :-3].copy_(cur[:, 3:])  # drop the oldest frame
        torch.clamp(pred, -1, 1, out=nxt[:, -3:])  # append the prediction
    return preds
