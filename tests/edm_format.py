"""Test helper: write tiny networks in EDM's persistent-pickle format, without EDM's code.

EDM's ``torch_utils.persistence.persistent_class`` makes an object pickle as a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with
``meta = dict(type="class", version=6, module_src=<source of the defining module>,
class_name=<name>, state=<the object's __dict__>)``; option dicts are ``dnnlib.util.EasyDict``.
``write_edm_pickle`` reproduces that byte layout with writer-side stand-ins that exist only while
pickling, so the reader has to get by with the module source the pickle carries.
"""

from __future__ import annotations

import contextlib
import pickle
import types
from pathlib import Path

from bench.models.checkpoints import temporary_modules

# The module source that travels inside the pickle (a toy preconditioned network, EDM-style API).
TINY_NET_SRC = """
import torch
from torch_utils import persistence


@persistence.persistent_class
class TinyUNet(torch.nn.Module):
    def __init__(self, channels, label_dim):
        super().__init__()
        # Named like EDM's encoder blocks, so that AMED's bottleneck hook finds the last one.
        self.enc = torch.nn.ModuleDict({"8x8_conv": torch.nn.Conv2d(channels, 8, 3, padding=1)})
        self.noise = torch.nn.Linear(1, 8)
        self.label = torch.nn.Linear(label_dim, 8, bias=False) if label_dim else None
        self.conv_out = torch.nn.Conv2d(8, channels, 3, padding=1)

    def forward(self, x, noise_labels, class_labels):
        emb = self.noise(noise_labels.reshape(-1, 1))
        if self.label is not None:
            emb = emb + self.label(class_labels)
        h = torch.tanh(self.enc["8x8_conv"](x) + emb[:, :, None, None])
        return self.conv_out(h)


@persistence.persistent_class
class TinyPrecond(torch.nn.Module):
    def __init__(self, img_resolution, img_channels, label_dim=0, sigma_min=0.0,
                 sigma_max=float("inf"), sigma_data=0.5):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data
        self.model = TinyUNet(img_channels, label_dim)

    def forward(self, x, sigma, class_labels=None, **kwargs):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        if self.label_dim:
            if class_labels is None:
                class_labels = torch.zeros([1, self.label_dim], device=x.device)
            class_labels = class_labels.to(torch.float32).reshape(-1, self.label_dim)
        total = self.sigma_data ** 2 + sigma ** 2
        skip = self.sigma_data ** 2 / total
        out = sigma * self.sigma_data / total.sqrt()
        inner = self.model(x / total.sqrt(), sigma.log().flatten() / 4, class_labels)
        return (skip * x + out * inner.to(torch.float32)).to(torch.float32)


@persistence.persistent_class
class LabelPainter(torch.nn.Module):
    # Denoises every image to a flat grey that encodes its class c: 2 c / (label_dim - 1) - 1.

    def __init__(self, img_resolution, img_channels, label_dim):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.sigma_min = 0.0
        self.sigma_max = float("inf")
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, sigma, class_labels=None, **kwargs):
        if class_labels is None:
            class_labels = torch.zeros([1, self.label_dim], device=x.device)
        grey = class_labels.to(torch.float32).argmax(dim=1) * (2.0 / (self.label_dim - 1)) - 1
        return grey.reshape(-1, 1, 1, 1).expand(x.shape).to(torch.float32)


@persistence.persistent_class
class TinyLoss:
    def __init__(self, sigma_data=0.5):
        self.sigma_data = sigma_data
"""

PERSISTENCE_VERSION = 6


def _reconstruct_persistent_obj(meta):  # never called on the writer side; pickled by name
    raise AssertionError("writer-side stand-in")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    """Writer-side stand-in for dnnlib.util.EasyDict (only its pickled name matters)."""


EasyDict.__module__ = "dnnlib.util"


def _persistent_class(cls: type) -> type:
    """Like EDM's decorator: instances pickle as (_reconstruct_persistent_obj, (meta,))."""

    class Persistent(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = args
            self._init_kwargs = kwargs

        def __reduce__(self):
            state = super().__reduce__()[2]
            meta = {
                "type": "class",
                "version": PERSISTENCE_VERSION,
                "module_src": TINY_NET_SRC,
                "class_name": cls.__name__,
                "state": state,
            }
            return _reconstruct_persistent_obj, (meta,), None

    Persistent.__name__ = Persistent.__qualname__ = cls.__name__
    return Persistent


@contextlib.contextmanager
def _writer_modules():
    torch_utils = types.ModuleType("torch_utils")
    torch_utils.__path__ = []
    persistence = types.ModuleType("torch_utils.persistence")
    persistence.persistent_class = _persistent_class
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    torch_utils.persistence = persistence
    dnnlib = types.ModuleType("dnnlib")
    dnnlib.__path__ = []
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    dnnlib.util = util
    modules = {
        "torch_utils": torch_utils,
        "torch_utils.persistence": persistence,
        "dnnlib": dnnlib,
        "dnnlib.util": util,
    }
    with temporary_modules(modules):
        yield


def tiny_network(
    img_resolution: int = 8,
    img_channels: int = 3,
    label_dim: int = 0,
    seed: int = 0,
    kind: str = "TinyPrecond",
    **kwargs,
):
    """A freshly built network class ``kind`` of TINY_NET_SRC, with seeded weights, and a loss."""
    import torch

    with _writer_modules():
        module = types.ModuleType("tiny_edm_networks")
        exec(TINY_NET_SRC, module.__dict__)  # noqa: S102 (our own test source)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = getattr(module, kind)(img_resolution, img_channels, label_dim=label_dim, **kwargs)
        loss = module.TinyLoss()
    net.eval().requires_grad_(False)
    return net, loss


def write_edm_pickle(path: Path, net, loss=None) -> Path:
    """Pickle ``net`` as EDM's training loop does: a snapshot dict with ``ema`` and friends."""
    data = {
        "ema": net,
        "loss_fn": loss,
        "augment_pipe": None,
        "dataset_kwargs": EasyDict(path="datasets/tiny.zip", resolution=net.img_resolution),
    }
    with _writer_modules(), open(path, "wb") as f:
        pickle.dump(data, f)
    return path
