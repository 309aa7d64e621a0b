"""The PyTorch side of the parity tests: the twins of rmtl's modules (in the package, as
:mod:`rmtl.torch`) and the reference losses, Adam loop and updates the tests train them with.

Module and parameter names follow the reference RMTL code so that state_dict keys match.
"""

from __future__ import annotations

import torch

from rmtl.torch import (  # noqa: F401  (the twins, for the tests and benchmarks)
    AITM,
    ESMM,
    PLE,
    TWINS,
    CriticNeg,
    EmbeddingLayer,
    MMoE,
    MultiLayerPerceptron,
    OMoE,
    PLEPaper,
    SharedBottom,
    SingleTask,
    to_torch,
)


def twin_of(model):
    """The PyTorch twin of an rmtl backbone, holding a copy of its weights (training mode)."""
    return to_torch(model).train()


def critic_twin_of(critic):
    """The PyTorch twin of an rmtl critic, holding a copy of its weights (training mode)."""
    return to_torch(critic).train()


def weighted_bce(prob, labels, weights=None):
    """(1/T) sum_k mean_i w_ik BCE(y_ik, p_ik), as the rmtl core computes it."""
    loss = torch.nn.functional.binary_cross_entropy(prob, labels, reduction="none")
    if weights is not None:
        loss = loss * weights
    return loss.mean()


def adam_steps(net, batches, steps, lr, weight_decay):
    """Reference Adam loop; the padding row of every embedding is kept fixed, as in rmtl
    (torch's weight decay would otherwise move it although it never gets a gradient)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    tables = [m.weight for m in net.modules() if isinstance(m, torch.nn.Embedding)]
    for s in range(steps):
        x_cat, x_num, y = batches[s % len(batches)]
        opt.zero_grad()
        weighted_bce(net(x_cat, x_num), y).backward()
        kept = [t.data[0].clone() for t in tables]
        opt.step()
        for t, row in zip(tables, kept):
            t.data[0] = row


def td_loss(q, q_target, s, a, s_next, a_next, reward, done, weight, gamma, td3):
    """mean_i w_i (Q(s_i, a_i) - y_i)^2 with y = r + gamma (1 - done) Qn not differentiated;
    Qn = min(Q'(s', a'), Q(s', a')) (td3) or Q'(s', a'), both in eval mode."""
    with torch.no_grad():
        mode = q.training
        q.eval()
        q_next = q_target.eval()(*s_next, a_next)
        if td3:
            q_next = torch.minimum(q_next, q(*s_next, a_next))
        q.train(mode)
        y = reward + gamma * (1 - done) * q_next
    err = (q(*s, a) - y) ** 2
    return (err * weight).mean() if weight is not None else err.mean()


def actor_loss(actor, critics, x_cat, x_num, weight=None):
    """-(1/B) sum_i sum_k w_ik Q_k(s_i, mu_k(s_i)), differentiated through the critics into the
    actor."""
    prob = actor(x_cat, x_num)
    q = torch.stack([c(x_cat, x_num, prob[:, k]) for k, c in enumerate(critics)], 1)
    if weight is not None:
        q = q * weight
    return -q.sum(1).mean()


def soft_update(target, source, tau):
    """theta' = tau theta + (1 - tau) theta', as the authors' agents do it."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.copy_(tau * s + (1.0 - tau) * t)
