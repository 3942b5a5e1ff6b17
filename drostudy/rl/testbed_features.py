"""The features of the log-linear testbed (drostudy.rl.testbed_data): MiniLM embeddings, SmolLM2's
likelihood of each candidate, and the linear reward head.

- Embeddings: mean-pooled, unit-norm MiniLM-L6 embeddings e_p (prompt, cut from the left) and e_r
  (response) at 128 tokens, cached under cache_dir()/"testbed" by text. The reward features are the
  probe's psi = [e_r, e_p * e_r] (768).
- Reward: a linear Bradley-Terry head w on psi fit (L-BFGS, L2 `reg`): the stage-1 reward model in its
  cached-feature form (benchmarks/probe_suite.py).
- SmolLM2's summed log-likelihood of a response under the chat prompt (the "smollm2" reference policy),
  cached by text: about an hour of CPU per split the first time.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from drostudy import evaluate
from drostudy.io import cache_dir
from drostudy.threads import torch_threads

SYSTEM_PROMPT = "Answer briefly."  # as drostudy.rl.run.RLConfig: the chat SmolLM2 scores under


def text_key(*texts: str) -> str:
    """A cache key of `texts` (sha1 of them joined)."""
    return hashlib.sha1("\0".join(texts).encode()).hexdigest()


def embed(texts: list[str], left: bool) -> np.ndarray:
    """(n, 384) float32 unit-norm mean-pooled MiniLM embeddings at 128 tokens, cached on disk by text.

    `left` truncates from the left (prompts: the question is at the end). Each text missing from the cache
    is encoded alone (a batch of one, no padding, on one thread), so its cached vector is the same bitwise
    whatever the cache held before and whatever other texts were asked for with it (a padded batch's
    shape, and so its last float digits, depended on both).
    """
    from transformers import AutoModel, AutoTokenizer

    from drostudy.models import minilm_path

    path = cache_dir() / "testbed" / f"minilm_{'left' if left else 'right'}.npz"
    store = dict(zip(*np.load(path).values(), strict=True)) if path.exists() else {}
    todo = sorted({t for t in texts if text_key(t) not in store})
    if todo:
        tok = AutoTokenizer.from_pretrained(
            str(minilm_path()), truncation_side="left" if left else "right"
        )
        model = AutoModel.from_pretrained(str(minilm_path())).eval()
        # one thread: a single short text gains nothing from more (measured: 10x the CPU time with 2
        # threads on a busy machine, spent waiting at each op's barrier), and its bits then do not depend on
        # the thread count either
        with torch_threads(1), torch.no_grad():
            for text in tqdm(todo, desc="MiniLM", leave=False):
                enc = tok([text], truncation=True, max_length=128, return_tensors="pt")
                hidden = model(**enc).last_hidden_state  # (1, T, 384), no padding
                pooled = torch.nn.functional.normalize(hidden.mean(1), dim=-1)
                store[text_key(text)] = pooled[0].numpy()
        _save(path, store)
    return np.stack([store[text_key(t)] for t in texts])


def _save(path, store: dict[str, np.ndarray]) -> None:
    """Write {key: vector or scalar} atomically (keys and values as two arrays)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, keys=np.array(list(store)), values=np.stack(list(store.values())))
    tmp.replace(path)


def smollm2_logps(prompts: list[str], responses: list[str]) -> np.ndarray:
    """(n,) SmolLM2-135M-Instruct summed log-probs of each response to its chat prompt, cached by text.

    Each missing (prompt, response) is scored alone (batch of one), so a cached value does not depend on
    which other pairs were missing with it (as `embed`)."""
    path = cache_dir() / "testbed" / "smollm2_logps.npz"
    store = dict(zip(*np.load(path).values(), strict=True)) if path.exists() else {}
    keys = [text_key(SYSTEM_PROMPT, p, r) for p, r in zip(prompts, responses, strict=True)]
    todo = sorted({k: i for i, k in enumerate(keys) if k not in store}.items())
    if todo:
        from drostudy.models import load_policy

        model, tok = load_policy()
        index = [i for _, i in todo]
        system = {"role": "system", "content": SYSTEM_PROMPT}
        chats = [[system, {"role": "user", "content": prompts[i]}] for i in index]
        logps = evaluate.reference_logps(
            model, tok, chats, [responses[i] for i in index], model, batch_size=1
        )
        store.update({k: v for (k, _), v in zip(todo, logps.double().numpy(), strict=True)})
        _save(path, store)
    return np.array([store[k] for k in keys])


def reward_features(prompts: list[str], responses: list[str]) -> torch.Tensor:
    """psi = [e_r, e_p * e_r] (n, 768) float64, the probe's (prompt, response) features."""
    e_p = torch.from_numpy(embed(prompts, left=True)).double()
    e_r = torch.from_numpy(embed(responses, left=False)).double()
    return torch.cat([e_r, e_p * e_r], dim=-1)


def fit_reward_head(chosen: torch.Tensor, rejected: torch.Tensor, reg: float) -> torch.Tensor:
    """w (D,) minimising mean softplus(-(w . (psi_c - psi_r))) + reg |w|^2 (L-BFGS); inputs (n, D)."""
    diff = chosen - rejected
    w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-(diff @ w)).mean() + reg * (w @ w)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()
