"""Building blocks shared by PoseNet and MeshNet: activations, sparse graph products, the Chebyshev convolution."""

from __future__ import annotations

import logging
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from p2m.errors import ConfigError

logger = logging.getLogger(__name__)

# torch warns once per process that sparse CSR tensors are "in beta"; the two operations used here (building a
# CSR tensor from its arrays, and sparse @ dense with autograd on the dense side) are stable and tested.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (relu, leaky_relu, elu, gelu, silu, tanh)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"activation {name!r} is not one of {sorted(_ACTIVATIONS)}") from None


def graph_mm(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multiply a graph operator with vertex-major features.

    Args:
        matrix: (V_out, V_in) sparse CSR/COO or dense tensor (its dtype wins: features are cast to it, so the
            product also runs under autocast).
        x: (V_in, B, F) features.

    Returns:
        (V_out, B, F) tensor.
    """
    v_in, b, f = x.shape
    flat = x.reshape(v_in, b * f).to(matrix.dtype)
    if matrix.layout == torch.strided:
        return (matrix @ flat).reshape(matrix.shape[0], b, f)
    # sparse products stay in the operator's dtype under autocast (MKL's CPU kernel has no bfloat16)
    with torch.autocast(flat.device.type, enabled=False):
        out = torch.sparse.mm(matrix, flat)
    return out.reshape(matrix.shape[0], b, f)


class ChebConv(nn.Module):
    """Chebyshev graph convolution of order K: ``y = sum_k T_k(L~) x W_k + b``.

    The weight is one ``(F_out, K * F_in)`` matrix (block k acts on T_k), initialised uniformly in
    ``+-sqrt(2 / (K F_in + F_out))`` with a zero bias, as in the original. Two equivalent evaluation orders are used:
    when ``F_out >= F_in`` the K-1 sparse products run on the F_in input channels (the recursion
    ``T_k = 2 L~ T_{k-1} - T_{k-2}``); when ``F_out < F_in`` the input is projected first and Clenshaw's recurrence
    runs the K-1 sparse products on F_out channels (e.g. the 64 -> 3 output conv), same result, less work.
    """

    def __init__(self, in_features: int, out_features: int, k: int = 3) -> None:
        super().__init__()
        self.in_features, self.out_features, self.k = in_features, out_features, k
        self.weight = nn.Parameter(torch.empty(out_features, k * in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        bound = math.sqrt(2.0 / (k * in_features + out_features))
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
        """Apply the convolution.

        Args:
            x: (V, B, F_in) vertex-major features.
            laplacian: (V, V) rescaled Laplacian (sparse or dense).

        Returns:
            (V, B, F_out).
        """
        if self.out_features < self.in_features and self.k > 1:
            return self._clenshaw(x, laplacian)
        terms = [x]
        if self.k > 1:
            terms.append(graph_mm(laplacian, x).to(x.dtype))
        for _ in range(2, self.k):
            terms.append(2.0 * graph_mm(laplacian, terms[-1]).to(x.dtype) - terms[-2])
        return F.linear(torch.cat(terms, dim=-1), self.weight, self.bias)

    def _clenshaw(self, x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
        k, fi, fo = self.k, self.in_features, self.out_features
        # a_k = x W_k for every k in one product: (V, B, K * F_out)
        w = self.weight.view(fo, k, fi).transpose(0, 1).reshape(k * fo, fi)
        a = F.linear(x, w).split(fo, dim=-1)
        b_next = a[k - 1]  # b_{K-1}
        b_next2 = torch.zeros_like(b_next)  # b_K
        for j in range(k - 2, 0, -1):
            b_next, b_next2 = a[j] + 2.0 * graph_mm(laplacian, b_next).to(x.dtype) - b_next2, b_next
        return a[0] + graph_mm(laplacian, b_next).to(x.dtype) - b_next2 + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, K={self.k}"


class GraphConvLayer(nn.Module):
    """ChebConv, then BatchNorm over all batch x vertex rows and the activation (both optional)."""

    def __init__(
        self, in_features: int, out_features: int, k: int, norm: bool, activation: str | None
    ) -> None:
        super().__init__()
        self.conv = ChebConv(in_features, out_features, k)
        self.norm = nn.BatchNorm1d(out_features) if norm else None
        self.act = make_activation(activation) if activation else None

    def forward(self, x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
        """(V, B, F_in) -> (V, B, F_out)."""
        y = self.conv(x, laplacian)
        if self.norm is not None:
            v, b, f = y.shape
            y = self.norm(y.reshape(v * b, f)).reshape(v, b, f)
        if self.act is not None:
            y = self.act(y)
        return y
