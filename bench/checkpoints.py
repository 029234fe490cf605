"""Load EDM network pickles (NVlabs/edm) as pasbench Denoisers, without EDM's code installed.

EDM pickles carry the source code of their network classes: each persistent object is pickled
as a call of ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` holds
``type``, ``version``, ``module_src`` (the whole source of the defining module), ``class_name``
and ``state`` (the object's ``__dict__``). Unpickling therefore needs a module called
``torch_utils.persistence`` (and ``dnnlib.util.EasyDict`` for the option dicts stored beside the
network). ``load_edm`` provides minimal stand-ins for these modules only while it unpickles and
restores ``sys.modules`` afterwards.

Security: unpickling runs code, and these pickles execute the module source they carry. Only
load checkpoints from a source you trust (the URLs in ``bench.edm`` are NVIDIA's own).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from bench.downloads import cached_path, fetch, is_url
from bench.errors import UserError

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
_NET_ATTRS = ("img_resolution", "img_channels", "label_dim", "sigma_min", "sigma_max")


class EDMDenoiser:
    """An EDM network (``net(x, sigma, class_labels)``) seen through the Denoiser contract.

    ``precision`` "fp16"/"bf16" runs only the network call under autocast; the output is cast
    back to the dtype of ``x``, so the solver's arithmetic keeps its own precision. "fp32"
    adds no autocast (a network built with ``use_fp16``, like EDM's ImageNet model, still
    takes its own fp16 path on CUDA, exactly as in EDM's and the reference's sampling code).
    ``device`` (where the network lives) and ``dtype`` (the working dtype of the states the
    solvers feed it) tell callers such as ``pas.fit`` where to put their tensors.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        name: str,
        *,
        precision: str = "fp32",
        dtype: torch.dtype = torch.float32,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
    ) -> None:
        _check_precision(precision)
        self.net = net
        self.name = name
        self.precision = precision
        self.dtype = dtype
        self.device = next(net.parameters()).device
        self.shape = (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))
        self.label_dim = int(net.label_dim)
        # Like EDM's sampler: the requested range, clipped to what the network supports.
        self.sigma_min = max(float(sigma_min), float(net.sigma_min))
        self.sigma_max = min(float(sigma_max), float(net.sigma_max))

    def __call__(
        self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None
    ) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        with self._autocast(x.device):
            out = self.net(x, sigma, class_labels)
        return out.to(x.dtype)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)


def load_edm(
    path_or_url: str | Path,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    cache_dir: Path | str | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
) -> EDMDenoiser:
    """The network in an EDM pickle (a local path, or a URL fetched into the cache) as a Denoiser.

    Only load trusted files: unpickling runs the code stored in the pickle.
    """
    _check_precision(precision)
    if is_url(path_or_url):
        path = fetch(str(path_or_url), cached_path(str(path_or_url), cache_dir))
    else:
        path = Path(path_or_url)
        if not path.is_file():
            raise UserError(f"checkpoint not found: {path}")
    net = _network(read_edm_pickle(path), path)
    device = torch.device(device)
    if device.type == "cuda":
        # Fixed shapes for the whole run, so letting cuDNN pick the fastest kernels pays off.
        torch.backends.cudnn.benchmark = True
    net = net.eval().requires_grad_(False).to(device)
    return EDMDenoiser(
        net, path.stem, precision=precision, dtype=dtype, sigma_min=sigma_min, sigma_max=sigma_max
    )


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISIONS)}")


def read_edm_pickle(path: Path | str) -> object:
    """Unpickle an EDM file with the stand-in ``torch_utils``/``dnnlib`` modules in place."""
    try:
        with open(path, "rb") as f, temporary_modules(_stand_ins()):
            return pickle.load(f)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 (a broken or foreign pickle can fail in any way)
        raise UserError(f"cannot read EDM checkpoint {path}: {err}") from None


def _network(obj: object, path: Path) -> torch.nn.Module:
    """The sampling network in an unpickled EDM object: the ``ema`` entry of a snapshot dict."""
    net = obj.get("ema") if isinstance(obj, dict) else obj
    if not isinstance(net, torch.nn.Module):
        raise UserError(f"{path} holds no EDM network (expected a dict with 'ema' or a module)")
    missing = [name for name in _NET_ATTRS if not hasattr(net, name)]
    if missing:
        raise UserError(f"{path}: the network lacks EDM attributes {', '.join(missing)}")
    return net


# ---- stand-ins for EDM's torch_utils and dnnlib, alive only while unpickling -----------------


class EasyDict(dict):
    """A dict whose keys also read and write as attributes (stand-in for dnnlib.util.EasyDict)."""

    def __getattr__(self, name: str) -> object:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: object) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


def _persistent_class(cls: type) -> type:
    # Saving source for re-pickling is all EDM's decorator adds; loading needs the class as is.
    return cls


class _Reconstructor:
    """``_reconstruct_persistent_obj`` for one load: runs each carried module source once."""

    def __init__(self) -> None:
        self._modules: dict[str, types.ModuleType] = {}

    def __call__(self, meta: dict) -> object:
        if meta.get("type") != "class":
            raise pickle.UnpicklingError(f"unsupported persistent object type {meta.get('type')!r}")
        module = self._module(meta["module_src"])
        cls = module.__dict__[meta["class_name"]]
        obj = cls.__new__(cls)
        state = meta.get("state") or {}
        setstate = getattr(obj, "__setstate__", None)
        if callable(setstate):
            setstate(state)
        else:
            obj.__dict__.update(state)
        return obj

    def _module(self, src: str) -> types.ModuleType:
        if src not in self._modules:
            module = types.ModuleType(f"_edm_pickled_module_{len(self._modules)}")
            exec(compile(src, module.__name__, "exec"), module.__dict__)  # noqa: S102 (trusted pickles only)
            self._modules[src] = module
        return self._modules[src]


def _stand_ins() -> dict[str, types.ModuleType]:
    torch_utils = types.ModuleType("torch_utils")
    torch_utils.__path__ = []  # a package, so "from torch_utils import x" resolves submodules
    persistence = types.ModuleType("torch_utils.persistence")
    persistence.persistent_class = _persistent_class
    persistence._reconstruct_persistent_obj = _Reconstructor()
    # Imported by EDM's augmentation module; only its methods (never called here) use it.
    misc = types.ModuleType("torch_utils.misc")
    torch_utils.persistence, torch_utils.misc = persistence, misc

    dnnlib = types.ModuleType("dnnlib")
    dnnlib.__path__ = []
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = dnnlib.EasyDict = EasyDict
    dnnlib.util = util
    return {
        "torch_utils": torch_utils,
        "torch_utils.persistence": persistence,
        "torch_utils.misc": misc,
        "dnnlib": dnnlib,
        "dnnlib.util": util,
    }


@contextlib.contextmanager
def temporary_modules(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    """Install ``modules`` in ``sys.modules``; put back whatever was there before on exit."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
