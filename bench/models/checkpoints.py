"""Load pretrained networks as pasbench Denoisers, without their training code installed.

``load_edm``: EDM network pickles (NVlabs/edm). ``load_cm``: the EDM-trained state dicts of
OpenAI's consistency_models release (e.g. ``edm_bedroom256_ema.pt``), rebuilt by
``bench.models.cm_network`` from the ``create_model`` flags. State dicts are read with
``torch.load(weights_only=True)``, which runs no code.

EDM pickles carry the source code of their network classes: each persistent object is pickled
as a call of ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` holds
``type``, ``version``, ``module_src`` (the whole source of the defining module), ``class_name``
and ``state`` (the object's ``__dict__``). Unpickling therefore needs a module called
``torch_utils.persistence`` (and ``dnnlib.util.EasyDict`` for the option dicts stored beside the
network). ``load_edm`` provides minimal stand-ins for these modules only while it unpickles and
restores ``sys.modules`` afterwards.

Security: unpickling runs code, and these pickles execute the module source they carry. Only
load checkpoints from a source you trust (the URLs in ``bench.models.edm`` are NVIDIA's own).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from bench.downloads import cached_path, fetch, is_url
from bench.errors import UserError
from bench.models.cm_network import KarrasPrecond, UNetModel

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# create_model's class count for class_cond=True (ImageNet).
CM_NUM_CLASSES = 1000
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
    path = _local_file(path_or_url, cache_dir)
    net = _on_device(_network(read_edm_pickle(path), path), device)
    return EDMDenoiser(
        net, path.stem, precision=precision, dtype=dtype, sigma_min=sigma_min, sigma_max=sigma_max
    )


def load_cm(
    path_or_url: str | Path,
    *,
    image_size: int = 256,
    num_channels: int = 256,
    num_res_blocks: int = 2,
    channel_mult: Sequence[int] | str = (1, 1, 2, 2, 4, 4),
    attention_resolutions: Sequence[int] | str = (32, 16, 8),
    num_heads: int = 1,
    num_head_channels: int = 64,
    resblock_updown: bool = True,
    use_scale_shift_norm: bool = False,
    class_cond: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    precision: str = "fp32",
    cache_dir: Path | str | None = None,
) -> EDMDenoiser:
    """A consistency-models EDM state dict (a local path, or a URL fetched into the cache).

    The keywords are ``cm.script_util.create_model``'s flags (the defaults are those of
    ``edm_bedroom256_ema.pt``; ``channel_mult`` and ``attention_resolutions`` may also be given
    as that code's comma-separated strings). The network lives on ``device`` (default CPU) in
    float32; ``precision`` "fp16" autocasts it to half precision, the checkpoint's training
    precision, while the solver states keep ``dtype`` (default float32). The sigma range is
    KarrasDenoiser's, 0.002 to 80.
    """
    _check_precision(precision)
    unet_kwargs = {
        "image_size": image_size,
        "model_channels": num_channels,
        "num_res_blocks": num_res_blocks,
        "attention_ds": _attention_ds(image_size, attention_resolutions),
        "channel_mult": _int_list(channel_mult, "channel_mult"),
        "num_classes": CM_NUM_CLASSES if class_cond else None,
        "num_heads": num_heads,
        "num_head_channels": num_head_channels,
        "use_scale_shift_norm": use_scale_shift_norm,
        "resblock_updown": resblock_updown,
    }
    try:
        # Built without memory on the meta device; the checkpoint's tensors then take its place.
        with torch.device("meta"):
            unet = UNetModel(**unet_kwargs)
    except ValueError as err:
        raise UserError(f"these create_model flags build no network: {err}") from None
    path = _local_file(path_or_url, cache_dir)
    state = read_state_dict(path)
    check_state_dict(state, unet.state_dict(), path)
    unet.load_state_dict(state, assign=True)
    net = _on_device(KarrasPrecond(unet.float()), device if device is not None else "cpu")
    return EDMDenoiser(net, path.stem, precision=precision, dtype=dtype or torch.float32)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a plain PyTorch state dict file, read without running any code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (a truncated or foreign file can fail in any way)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state dict (a dict of tensors)")
    return state


def check_state_dict(
    state: dict[str, Tensor], expected: dict[str, Tensor], path: Path, shown: int = 3
) -> None:
    """``UserError`` naming the first few missing, unknown and mis-shaped keys, if any."""
    problems = []
    missing = [key for key in expected if key not in state]
    unknown = [key for key in state if key not in expected]
    wrong = [
        f"{key} {tuple(state[key].shape)} (network: {tuple(expected[key].shape)})"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    for label, items in (("missing", missing), ("unknown", unknown), ("mis-shaped", wrong)):
        if items:
            more = f" and {len(items) - shown} more" if len(items) > shown else ""
            problems.append(f"{len(items)} {label} keys: {', '.join(items[:shown])}{more}")
    if problems:
        raise UserError(
            f"{path} does not fit the network built from the given flags ({'; '.join(problems)})"
        )


def _int_list(value: Sequence[int] | str, name: str) -> tuple[int, ...]:
    """A tuple of ints from a sequence or from consistency_models' "1,1,2" strings."""
    try:
        items = value.split(",") if isinstance(value, str) else value
        numbers = tuple(int(item) for item in items)
    except (TypeError, ValueError):
        numbers = ()
    if not numbers or min(numbers) <= 0:
        raise UserError(f"{name} must be positive integers (e.g. 1,1,2,2,4,4), got {value!r}")
    return numbers


def _attention_ds(image_size: int, resolutions: Sequence[int] | str) -> tuple[int, ...]:
    """create_model's attention rule: feature-map sizes in pixels become downsampling factors."""
    return tuple(image_size // res for res in _int_list(resolutions, "attention_resolutions"))


def _local_file(path_or_url: str | Path, cache_dir: Path | str | None) -> Path:
    """A local checkpoint file: a URL is fetched into the cache, a path must exist."""
    if is_url(path_or_url):
        return fetch(str(path_or_url), cached_path(str(path_or_url), cache_dir))
    path = Path(path_or_url)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path


def _on_device(net: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    device = torch.device(device)
    if device.type == "cuda":
        # Fixed shapes for the whole run, so letting cuDNN pick the fastest kernels pays off.
        torch.backends.cudnn.benchmark = True
    return net.eval().requires_grad_(False).to(device)


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
