"""Naive float64 oracles: broadcast formulas straight from the spec, no tricks."""

import math

import torch


def naive_log_joint(x, logits, means, sqrt_precisions):
    """x (M, C); parameters (K, C) -> (M, K) via an explicit (M, K, C) broadcast."""
    diff = x[:, None, :] - means[None]
    prec = sqrt_precisions[None] ** 2
    log_dens = (
        torch.log(sqrt_precisions).sum(-1)[None]
        - 0.5 * (prec * diff**2).sum(-1)
        - 0.5 * x.shape[-1] * math.log(2 * math.pi)
    )
    return torch.log_softmax(logits, -1)[None] + log_dens


def naive_fold(x, fy, fx, sy, sx):
    """Loop-based folding with channel order (dy * fx + dx) * C + c."""
    n, h, w, c = x.shape
    ho, wo = (h - fy) // sy + 1, (w - fx) // sx + 1
    out = torch.zeros(n, ho, wo, fy * fx * c, dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            for dy in range(fy):
                for dx in range(fx):
                    ch = (dy * fx + dx) * c
                    out[:, i, j, ch : ch + c] = x[:, i * sy + dy, j * sx + dx, :]
    return out


def naive_torus_kernel(k, sigma):
    side = math.isqrt(k)
    g = torch.zeros(k, k, dtype=torch.float64)
    for a in range(k):
        for b in range(k):
            dr = abs(a // side - b // side)
            dc = abs(a % side - b % side)
            dr, dc = min(dr, side - dr), min(dc, side - dc)
            g[a, b] = math.exp(-(dr * dr + dc * dc) / (2 * sigma * sigma))
    return g / g.sum(1, keepdim=True)
