"""Toy preference pairs and a gradient snapshot shared by the CPU tests and tests/test_gpu.py.

Plain Python and torch only (no datasets, trl or plotly at import): tests/test_gpu.py imports it on the GPU
machine, which lacks those until scripts/gpu_check.sh installs some.
"""

from __future__ import annotations

import torch


def text_pairs(n: int = 8) -> list[dict]:
    """Plain-text pairs of different lengths (so a batch has padding), in two domains."""
    return [
        {
            "prompt": f"What is {i} plus {i}?" + " Think." * (i % 3),
            "chosen": f" It is {2 * i}.",
            "rejected": " No idea." * (1 + i % 2),
            "domain": ["math", "code"][i % 2],
        }
        for i in range(n)
    ]


def chat_pairs(n: int = 8, group_key: str = "group") -> list[dict]:
    """Conversational pairs of different lengths, in two groups (`group_key`: 0 or 1)."""
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} plus {i}?" + " Think." * (i % 3)}],
            "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
            "rejected": [{"role": "assistant", "content": "No idea, sorry." * (1 + i % 2)}],
            group_key: i % 2,
        }
        for i in range(n)
    ]


def lora_grads(model) -> dict[str, torch.Tensor]:
    """Copies of the trainable parameters' gradients, which are then cleared."""
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads
