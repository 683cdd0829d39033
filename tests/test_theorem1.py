"""Theorem 1: with alpha^2 * beta < 1 / (4 M^2 L0), each step of Alg. 1 does not increase the labeled loss."""
import torch
import torch.nn.functional as F
from torch import nn

from metassl.algorithms.meta_gradient import meta_gradient, unlabeled_loss


def test_alg1_never_increases_labeled_loss_below_the_bound():
    torch.manual_seed(0)
    d, k, n_l, n_u, b_u = 4, 3, 24, 400, 16
    x_l, y_l = torch.randn(n_l, d, dtype=torch.float64), torch.randint(0, k, (n_l,))
    x_u = torch.randn(n_u, d, dtype=torch.float64)
    model = nn.Linear(d, k).double()  # softmax regression: smooth, bounded Jacobian
    # Bounds for softmax regression with inputs x~ = [x, 1]: the softmax Jacobian has norm <= 1/2, so
    # ||J_theta f|| <= ||x~|| / 2 =: M; the CE Hessian is (diag p - p p^T) (x) x~ x~^T, so L0 <= max ||x~||^2 / 2.
    sq = lambda x: (x ** 2).sum(1) + 1
    M2 = sq(x_u).max().item() / 4
    L0 = sq(x_l).max().item() / 2
    alpha = 0.5
    beta = 0.9 / (4 * M2 * L0 * alpha ** 2)   # alpha^2 beta = 0.9 x the bound
    G = lambda: F.cross_entropy(model(x_l), y_l).item()
    losses = [G()]
    for t in range(150):
        xb = x_u[torch.randint(0, n_u, (b_u,))]
        with torch.no_grad():
            y_tilde = F.softmax(model(xb), 1)
        # the true meta-gradient of Eq. 13 is (alpha / B_u) x the normalised one meta_gradient returns
        grad_y = meta_gradient(model, x_l, y_l, xb, y_tilde, method="exact", phi="mse") * alpha / b_u
        y_hat = y_tilde - beta * grad_y                                      # Eq. 6, no projection
        loss = unlabeled_loss(model(xb), y_hat, "mse")
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p.sub_(alpha * g)                                            # plain SGD step
        losses.append(G())
    steps = torch.tensor(losses)
    assert (steps[1:] <= steps[:-1] + 1e-12).all(), "labeled loss increased"
    assert losses[-1] < losses[0] - 1e-4, "no progress: the test would be vacuous"
