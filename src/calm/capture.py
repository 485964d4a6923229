"""Capturing heads: forward pre-hooks on every site's output projection that keep its input at
each row's last real prompt token (found from the attention mask, so left and right padding both
work), stacked into [B, K, D]."""

from __future__ import annotations

from typing import Any

import torch

from calm.backbones.base import Backbone, StopForward


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a [B, T] mask (left or right padding)."""
    mask = mask.bool()
    if not mask.any(dim=1).all():
        raise ValueError("a row of the attention mask has no real token")
    return mask.shape[1] - 1 - mask.flip(1).int().argmax(dim=1)


class HeadCapture:
    """Forward pre-hooks on the sites' output projections that keep the last real token's input.

    Use as a context manager around forward passes; before each pass call :meth:`expect` with the
    batch's token mask, after it :meth:`collect` for the [B, K, D] float32 CPU tensor.
    """

    def __init__(self, backbone: Backbone, stop_after_last_site: bool = False) -> None:
        self.sites = backbone.sites
        self.stop_after_last_site = stop_after_last_site
        self._handles: list[Any] = []
        self._last: torch.Tensor | None = None
        self._length = 0
        self._captured: dict[int, torch.Tensor] = {}

    def __enter__(self) -> "HeadCapture":
        for index, site in enumerate(self.sites):
            self._handles.append(site.proj.register_forward_pre_hook(self._hook(index)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def expect(self, mask: torch.Tensor) -> None:
        """Arm the hooks for a batch whose token sequence has this [B, T] mask."""
        self._last = last_token_index(mask)
        self._length = mask.shape[1]
        self._captured = {}

    def _hook(self, index: int):
        site = self.sites[index]

        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if self._last is None:
                return
            hidden = args[0]
            if index in self._captured:
                raise RuntimeError(f"{site.name}: output projection ran twice in one forward pass")
            if hidden.dim() != 3 or hidden.shape[0] != self._last.shape[0] or hidden.shape[1] != self._length:
                raise RuntimeError(
                    f"{site.name}: projection input has shape {tuple(hidden.shape)}, expected "
                    f"[{self._last.shape[0]}, {self._length}, ...] from the attention mask"
                )
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            self._captured[index] = hidden[rows, self._last.to(hidden.device)].detach()
            if self.stop_after_last_site and len(self._captured) == len(self.sites):
                raise StopForward

        # Run eagerly under torch.compile: traced, the hook would specialise each compiled layer
        # on its site index (one recompile per layer, past dynamo's limit).
        return torch.compiler.disable(hook)

    def collect(self) -> torch.Tensor:
        """[B, K, D] float32 on the CPU, sites in order; errors if a site did not run."""
        missing = [self.sites[i].name for i in range(len(self.sites)) if i not in self._captured]
        if missing:
            raise RuntimeError(f"{len(missing)} site(s) never ran in the forward pass, e.g. {missing[:2]}")
        parts = [self._captured[i].reshape(-1, s.num_heads, s.head_dim) for i, s in enumerate(self.sites)]
        stacked = torch.cat(parts, dim=1).to("cpu", torch.float32)
        self._last, self._captured = None, {}
        return stacked
