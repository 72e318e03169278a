"""The small seeded autoencoders of the DeepProg-style baseline: training, encoding, the device they run on.

Apart from :mod:`omics_risk.models.deepprog` so that the torch part (bit-identical CPU runs: a forked RNG, one
thread) is separate from the subtype logic built on its latent nodes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["AutoEncoder", "encode", "resolve_device", "train_autoencoder"]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch finds no CUDA device; use device=auto or cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class AutoEncoder(nn.Module):
    """Dropout (denoising) -> encoder with a tanh bottleneck -> linear decoder."""

    def __init__(self, n_in: int, latent_dim: int, hidden_dim: int | None, dropout: float):
        super().__init__()
        enc: list[nn.Module] = [nn.Dropout(dropout)]
        dec: list[nn.Module] = []
        if hidden_dim:
            enc += [nn.Linear(n_in, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, latent_dim), nn.Tanh()]
            dec += [nn.Linear(latent_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, n_in)]
        else:
            enc += [nn.Linear(n_in, latent_dim), nn.Tanh()]
            dec += [nn.Linear(latent_dim, n_in)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def train_autoencoder(
    X: np.ndarray,
    latent_dim: int,
    *,
    hidden_dim: int | None = None,
    epochs: int = 100,
    batch_size: int = 32,
    lr: float = 5e-3,
    weight_decay: float = 1e-4,
    dropout: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> AutoEncoder:
    """A seeded autoencoder (MSE reconstruction, Adam, mini-batches) trained on ``X``; returned on CPU, in eval mode.

    The global torch RNG is forked, so training does not disturb the caller's random state, and the same inputs
    and seed give the same weights on CPU.
    """
    dev = torch.device(device)
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)  # matrices this small only lose to OpenMP thread spinning (4x slower on 2 cores)
    try:
        return _train(X, latent_dim, hidden_dim, epochs, batch_size, lr, weight_decay, dropout, seed, dev)
    finally:
        torch.set_num_threads(threads)


def _train(
    X: np.ndarray,
    latent_dim: int,
    hidden_dim: int | None,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    dropout: float,
    seed: int,
    dev: torch.device,
) -> AutoEncoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoEncoder(X.shape[1], latent_dim, hidden_dim, dropout).to(dev)
        gen = torch.Generator().manual_seed(seed)
        x = torch.as_tensor(np.asarray(X, dtype=np.float32), device=dev)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        n = x.shape[0]
        bs = max(2, min(batch_size, n))
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen).to(dev)
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                if len(idx) < 2:
                    continue
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.mse_loss(model(x[idx]), x[idx])
                loss.backward()
                opt.step()
    return model.cpu().eval()


def encode(model: AutoEncoder, X: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.encoder(torch.as_tensor(np.asarray(X, dtype=np.float32))).numpy().astype(np.float64)
