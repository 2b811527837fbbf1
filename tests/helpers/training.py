"""Checks shared by the training-method tests."""

from __future__ import annotations

import torch

from sr_cli.train.loop import make_optimizers


def loss_goes_down(method, cfg, lq, hq, steps: int) -> None:
    """A few generator steps on one batch with the same noise each step (a fixed objective) lower the loss."""
    gen_opt, _ = make_optimizers(method, cfg)
    losses = []
    for _ in range(steps):
        torch.manual_seed(0)
        gen_opt.zero_grad()
        total = method(lq, hq)["total"]
        total.backward()
        gen_opt.step()
        losses.append(total.item())
    assert losses[-1] < losses[0], losses


def aux_gradients(method, aux_inputs) -> dict[str, torch.Tensor | None]:
    """The auxiliary network's own loss (a discriminator's) backpropagated from cleared gradients: its
    parameters' gradients by name."""
    for p in method.aux.parameters():
        p.grad = None
    method.aux(*aux_inputs)["total"].backward()
    return {n: p.grad for n, p in method.aux.named_parameters()}
