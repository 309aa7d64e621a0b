"""LibMTL's weighting classes driven on given task losses and Jacobians: the reference side of
the parity tests of :mod:`rmtl.balancers` (tests/test_balancers.py) and of
benchmarks/parity_libmtl.py (the methods only LibMTL's repository has).

A LibMTL weighting class is a mixin of its model: it reads ``task_num``, ``epoch``,
``train_loss_buffer``, the shared parameters and the task losses, and leaves the direction in
the shared parameters' ``.grad``. Here the shared parameters are one vector ``theta`` at zero
and task ``k``'s loss is ``L_k(theta) = c_k + g_k . theta``, so at ``theta = 0`` the losses are
exactly ``c`` and their gradients exactly the rows ``g_k`` of the given Jacobian: every method
sees the same inputs as rmtl's balancer. Trainable balancer parameters (UW's and GradNorm's
``loss_scale``) are stepped by Adam as LibMTL's trainer steps them with the model's optimizer.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch

#: LibMTL's class of every balancer, and the one that stands in for the two it lacks
CLASSES = {
    "ew": "EW",
    "linear": "EW",
    "uw": "UW",
    "gls": "GLS",
    "dwa": "DWA",
    "rlw": "RLW",
    "famo": "FAMO",
    "stch": "STCH",
    "gradnorm": "GradNorm",
    "imtl": "IMTL",
    "db_mtl": "DB_MTL",
    "excess_mtl": "ExcessMTL",
    "mgda": "MGDA",
    "pcgrad": "PCGrad",
    "gradvac": "GradVac",
    "graddrop": "GradDrop",
    "aligned_mtl": "Aligned_MTL",
    "moco": "MoCo",
    "cagrad": "CAGrad",
    "nash_mtl": "Nash_MTL",
    "upgrad": "UPGrad",
    "fairgrad": "FairGrad",
    "modo": "MoDo",
    "sdmgrad": "SDMGrad",
}
#: LibMTL's weighting arguments at the defaults of its config.py (its trainer passes them all)
LIBMTL_ARGS = {
    "T": 2.0,
    "mgda_gn": "none",
    "GradVac_beta": 0.5,
    "GradVac_group_type": 0,
    "beta": 0.5,
    "alpha": 1.5,
    "leak": 0.0,
    "calpha": 0.5,
    "rescale": 1,
    "update_weights_every": 1,
    "optim_niter": 20,
    "max_norm": 1.0,
    "MoCo_beta": 0.5,
    "MoCo_beta_sigma": 0.5,
    "MoCo_gamma": 0.1,
    "MoCo_gamma_sigma": 0.5,
    "MoCo_rho": 0,
    "DB_beta": 0.9,
    "DB_beta_sigma": 0,
    "STCH_mu": 1.0,
    "STCH_warmup_epoch": 4,
    "robust_step_size": 1e-2,
    "FairGrad_alpha": 1.0,
    "FAMO_w_lr": 0.025,
    "FAMO_w_gamma": 1e-3,
    "MoDo_gamma": 1e-3,
    "MoDo_rho": 0.1,
    "SDMGrad_lamda": 0.3,
    "SDMGrad_niter": 20,
    "UPGrad_norm_eps": 1e-4,
    "UPGrad_reg_eps": 1e-4,
    "dist": "Normal",
}


def import_weighting(path: Optional[str] = None) -> types.ModuleType:
    """``LibMTL.weighting`` from the installed package, or from a checkout at ``path``.

    LibMTL's package imports torchvision for its ResNet (unused here): a stub stands in when
    torchvision is not installed."""
    try:
        import torchvision  # noqa: F401  (optional: only LibMTL's ResNet needs it)
    except ImportError:
        tv = types.ModuleType("torchvision")
        tv.models = types.ModuleType("torchvision.models")
        tv.models.utils = types.ModuleType("torchvision.models.utils")
        tv.models.utils.load_state_dict_from_url = None
        sys.modules.update(
            {
                "torchvision": tv,
                "torchvision.models": tv.models,
                "torchvision.models.utils": tv.models.utils,
            }
        )
    if path is not None:
        sys.path.insert(0, path)
        for name in [m for m in sys.modules if m == "LibMTL" or m.startswith("LibMTL.")]:
            del sys.modules[name]
    import LibMTL.weighting as weighting

    return weighting


def import_repository(path: str) -> types.ModuleType:
    """``LibMTL.weighting`` from LibMTL's repository checkout at ``path``, leaving ``sys.modules``
    and ``sys.path`` as they were: the installed LibMTL's modules come back afterwards, so later
    imports still see the release (1.1.5). torch_geometric, which the repository's trainer
    imports, is stubbed while it imports when it is not installed."""

    def is_libmtl(name: str) -> bool:
        return name == "LibMTL" or name.startswith("LibMTL.")

    saved = {m: mod for m, mod in sys.modules.items() if is_libmtl(m)}
    saved_path = list(sys.path)
    stubbed = False
    if "torch_geometric" not in sys.modules:
        try:
            import torch_geometric  # noqa: F401
        except ImportError:
            sys.modules["torch_geometric"] = types.ModuleType("torch_geometric")
            stubbed = True
    try:
        return import_weighting(path)
    finally:
        for m in [m for m in sys.modules if is_libmtl(m)]:
            del sys.modules[m]
        sys.modules.update(saved)
        sys.path[:] = saved_path
        if stubbed:
            sys.modules.pop("torch_geometric", None)


def symeig(M: torch.Tensor, eigenvectors: bool = True) -> Any:
    """``torch.symeig``, removed from torch, which the repository's Aligned-MTL calls:
    ``torch.linalg.eigh`` (eigenvalues ascending, as symeig gave them)."""
    return torch.linalg.eigh(M)


def autograd_on_the_representation(compute_grad: Any) -> Any:
    """LibMTL's ``_compute_grad`` with the representation branch of the ``autograd`` mode it
    lacks (ExcessMTL asks for that mode; without the branch its gradients stay zero and 0 / 0
    makes its weights NaN at step 2): each task's gradient of the copy of the representation
    its tower reads, by torch.autograd.grad as in the parameter branch, so nothing accumulates
    in ``.grad``; one tensor (K, B, H) when every tower reads the same, else a list"""

    def patched(self: Any, losses: torch.Tensor, mode: str, rep_grad: bool = False) -> Any:
        if not (rep_grad and mode == "autograd"):
            return compute_grad(self, losses, mode, rep_grad)
        grads = [
            torch.autograd.grad(losses[k], self.rep_tasks[task], retain_graph=True)[0]
            for k, task in enumerate(self.task_name)
        ]
        return grads if isinstance(self.rep, dict) else torch.stack(grads)

    return patched


def metabalance_weighting(
    path: Optional[str] = None, relax_factor: float = 0.7, beta: float = 0.9
) -> type:
    """torch-rechub's MetaBalance optimizer behind LibMTL's weighting interface, for
    :func:`train`: ``backward`` runs the optimizer's ``step(losses)`` over the shared parameters
    (each task's backward, the per-tensor scaling, their sum left in the shared gradients; the
    towers' gradients add up over the tasks), as torch-rechub's MTLTrainer does before its Adam
    steps, and ignores LibMTL's arguments. The class comes from the checkout at ``path``, else
    from the installed torch-rechub (ImportError without either). Only its file
    torch_rechub/basic/metaoptimizer.py is loaded: it needs torch alone, where the package's own
    import pulls in its trainers and their dependencies."""
    if path is not None:
        root = os.path.join(path, "torch_rechub")
    else:
        spec = importlib.util.find_spec("torch_rechub")
        if spec is None:
            raise ImportError("torch-rechub is not installed")
        root = spec.submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location(
        "rechub_metaoptimizer", os.path.join(root, "basic", "metaoptimizer.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class MetaBalanceWeighting(torch.nn.Module):
        meta_balance = module.MetaBalance  # the optimizer class itself

        def init_param(self) -> None:
            self.meta = None

        def backward(self, losses: torch.Tensor, **kwargs: Any) -> None:
            if self.meta is None:
                params = list(self.get_share_params())
                self.meta = self.meta_balance(params, relax_factor=relax_factor, beta=beta)
            self.meta.step(list(losses))

    return MetaBalanceWeighting


def host(cls: type, num_tasks: int, dim: int, epochs: int) -> Any:
    """An instance of LibMTL weighting class ``cls`` over ``num_tasks`` tasks whose shared
    parameters are one vector of ``dim`` zeros."""

    class Host(cls):
        def __init__(self) -> None:
            super().__init__()
            self.task_num, self.device, self.rep_grad = num_tasks, torch.device("cpu"), False
            self.task_name = [f"task{k}" for k in range(num_tasks)]
            self.encoder = torch.nn.Module()
            self.encoder.theta = torch.nn.Parameter(torch.zeros(dim))
            self.decoders = torch.nn.ModuleDict()
            self.epoch, self.epochs = 0, epochs
            self.train_loss_buffer = np.zeros([num_tasks, epochs])
            self.init_param()

        def get_share_params(self):
            return self.encoder.parameters()

        def zero_grad_share_params(self) -> None:
            self.encoder.zero_grad(set_to_none=False)

    return Host()


def run(
    cls: type,
    steps: Sequence[tuple[np.ndarray, np.ndarray]],
    hyper: Mapping[str, Any],
    *,
    epoch_ends: Sequence[int] = (),
    after: Optional[Sequence[np.ndarray]] = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
) -> list[tuple[np.ndarray, Optional[np.ndarray]]]:
    """LibMTL's directions and returned weights for ``steps``, each ``(losses (S, K),
    jacobian (S, K, P))`` (S = 3 for MoDo and SDMGrad, else 1). An epoch ends after every
    step index in ``epoch_ends`` (its mean losses go to ``train_loss_buffer``, as LibMTL's
    trainer records them); ``after[i]`` are the losses at the updated parameters that
    ``update_w`` reads after step ``i`` (FAMO). ``hyper`` holds LibMTL's keyword arguments
    (with their prefixes)."""
    S, K, P = steps[0][1].shape
    h = host(cls, K, P, epochs=len(epoch_ends) + 1)
    own = [p for n, p in h.named_parameters() if not n.startswith("encoder.")]
    opt = torch.optim.Adam(own, lr=lr, weight_decay=weight_decay) if own else None
    theta = h.encoder.theta
    sums, count, out = np.zeros(K), 0, []
    for i, (losses, jac) in enumerate(steps):
        if opt is not None:
            opt.zero_grad(set_to_none=False)
        h.encoder.zero_grad(set_to_none=False)
        c = torch.tensor(np.asarray(losses, np.float32).reshape(S, K))
        g = torch.tensor(np.asarray(jac, np.float32).reshape(S, K, P))
        loss = c + g @ theta
        w = h.backward(loss[0] if S == 1 else loss, **hyper)
        out.append((theta.grad.detach().numpy().copy(), None if w is None else np.asarray(w)))
        if opt is not None:
            opt.step()
        with torch.no_grad():
            theta.zero_()
        if after is not None:
            h.update_w(torch.tensor(np.asarray(after[i], np.float32)))
        sums += c.numpy().sum(0)
        count += S
        if i in epoch_ends:
            h.train_loss_buffer[:, h.epoch] = sums / count
            sums, count = np.zeros(K), 0
            h.epoch += 1
    return out


def train(
    cls: type,
    net: torch.nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    shared: Sequence[str],
    hyper: Mapping[str, Any],
    *,
    steps: int,
    samples: int = 1,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    epoch_ends: Sequence[int] = (),
    rep_grad: bool = False,
) -> list[Optional[np.ndarray]]:
    """``steps`` training steps of the PyTorch twin ``net`` with LibMTL's weighting class
    ``cls`` balancing its task losses (per-task mean BCE), as LibMTL's trainer runs them:
    each step reads ``samples`` batches in turn from ``batches`` (``(x_cat, x_num, y)``),
    the class's ``backward`` leaves the gradients, Adam (over the net's parameters and the
    class's own) steps, and FAMO's ``update_w`` reads the step's last batch at the new
    parameters. The tensors named in ``shared`` are the shared parameters; the others are
    task-specific. Embeddings' padding rows are kept fixed, as in rmtl. With ``rep_grad``
    the class works on the representation the towers read, as LibMTL's architectures
    prepare it: each tower ``net.tower[k]`` reads a detached copy of its input
    (``rep_tasks``), and ``rep`` is that input (one tensor when every tower reads the same,
    else one per task). A class whose ``backward`` ends with a plain ``loss.backward()``
    (GradNorm's first epoch, the loss-weight methods) leaves the copies' gradients where
    LibMTL leaves them, so its shared layers never train; when no shared parameter got a
    gradient they are sent on into ``rep`` as the undetached net would. Returns the weights
    ``backward`` returned at each step."""
    K = net(batches[0][0][:1], batches[0][1][:1]).shape[1]
    params = dict(net.named_parameters())
    shared_params = [params[n] for n in shared]

    class Host(cls):
        def __init__(self) -> None:
            super().__init__()
            self.task_num, self.device, self.rep_grad = K, torch.device("cpu"), rep_grad
            self.task_name = [f"task{k}" for k in range(K)]
            # the towers, as LibMTL's trainer passes its decoders (MoDo averages their
            # gradients over its three samples); a plain dict, so they stay the net's alone
            object.__setattr__(self, "decoders", dict(zip(self.task_name, net.tower)))
            self.epoch, self.epochs = 0, len(epoch_ends) + 1
            self.train_loss_buffer = np.zeros([K, self.epochs])
            self.init_param()

        def get_share_params(self):
            return iter(shared_params)

        def zero_grad_share_params(self) -> None:
            for p in shared_params:
                if p.grad is not None:
                    p.grad.zero_()

        @property
        def encoder(self) -> Any:
            """the shared layers as LibMTL's ExcessMTL zeroes them (``encoder.zero_grad()``)"""
            return types.SimpleNamespace(zero_grad=self.zero_grad_share_params)

    h, hooks = Host(), []
    if rep_grad:
        seen: list[torch.Tensor] = []

        def prepare(k: int) -> Any:
            def hook(module: torch.nn.Module, args: tuple) -> tuple:
                if k == 0:
                    seen.clear()
                seen.append(args[0])
                h.rep_tasks[h.task_name[k]] = args[0].detach().clone().requires_grad_(True)
                if k == K - 1:
                    same = all(x is seen[0] for x in seen)
                    h.rep = seen[0] if same else dict(zip(h.task_name, seen))
                return (h.rep_tasks[h.task_name[k]], *args[1:])

            return hook

        h.rep_tasks = {}
        hooks = [t.register_forward_pre_hook(prepare(k)) for k, t in enumerate(net.tower)]
    try:
        return _steps(
            h, net, batches, shared_params, hyper, steps, samples, lr, weight_decay, epoch_ends
        )
    finally:  # a later call on the same net must not run this call's hooks before its own
        for hook in hooks:
            hook.remove()


def _steps(h, net, batches, shared_params, hyper, steps, samples, lr, weight_decay, epoch_ends):
    """:func:`train`'s steps, with LibMTL's weighting object ``h`` prepared."""
    K, rep_grad = h.task_num, h.rep_grad
    opt = torch.optim.Adam(
        list(net.parameters()) + list(h.parameters()), lr=lr, weight_decay=weight_decay
    )
    tables = [m.weight for m in net.modules() if isinstance(m, torch.nn.Embedding)]
    bce = torch.nn.functional.binary_cross_entropy
    out, sums, rows, b = [], np.zeros(K), 0, 0
    for step in range(steps):
        losses = []
        for _ in range(samples):
            x_cat, x_num, y = batches[b % len(batches)]
            b += 1
            p = net(x_cat, x_num)
            losses.append(torch.stack([bce(p[:, k], y[:, k]) for k in range(K)]))
            sums += losses[-1].detach().numpy() * len(y)
            rows += len(y)
        opt.zero_grad(set_to_none=False)
        w = h.backward(losses[0] if samples == 1 else torch.stack(losses), **hyper)
        if rep_grad and not any(p.grad is not None and p.grad.any() for p in shared_params):
            grads = [h.rep_tasks[t].grad for t in h.task_name]
            if isinstance(h.rep, dict):
                torch.autograd.backward(list(h.rep.values()), grads)
            else:
                h.rep.backward(sum(grads))
        out.append(None if w is None else np.asarray(w, np.float64))
        kept = [t.data[0].clone() for t in tables]
        opt.step()
        for t, row in zip(tables, kept):
            t.data[0] = row
        if hasattr(h, "update_w"):
            with torch.no_grad():
                p = net(x_cat, x_num)
                h.update_w(torch.stack([bce(p[:, k], y[:, k]) for k in range(K)]))
        if step in epoch_ends:
            h.train_loss_buffer[:, h.epoch] = sums / rows
            sums, rows = np.zeros(K), 0
            h.epoch += 1
    return out
