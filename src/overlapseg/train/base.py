"""One training loop for every model: the :class:`Trainer` base and its registry.

A model family is one subclass that supplies the steps (``DEFAULTS``, ``build_model``,
``load_data``, ``sample_batch``, ``losses``, ``predict_image``; optionally the optimizer,
learning-rate schedule, validation or a whole ``training_step``), registered by name with
:func:`register`. Everything else is written once, here:

* params resolved against the trainer's defaults (nested dicts merged, unknown keys are
  errors naming the key and listing the known ones);
* seeding per (seed, iteration): the batch is drawn from ``iteration_rng(seed, it)`` and
  torch's generator is reseeded from the same pair, so an interrupted run resumes to the
  same bytes as an uninterrupted one, whatever the number of data-loading workers;
* checkpoints (``checkpoints/last.pt``) carrying a fingerprint of everything that changes
  what is learned (params minus run-length/inference keys, seed, trainer, inputs); a
  checkpoint with another fingerprint is ignored, and one is also written at the end so a
  larger ``iterations`` continues training;
* one mixed-precision policy (``amp``: off on CPU for bitwise determinism; bf16 autocast on
  GPUs that support it, else fp16 with a gradient scaler);
* a loss log (``log.csv``) whose columns are the loss names the model returns;
* a non-finite loss stops the run naming the experiment and iteration, before any step or
  checkpoint; a checkpoint is never written from non-finite weights;
* one deterministic ``model.pt`` layout ``{format, trainer, params, state_dict, seed, inputs,
  iterations, mix[, init]}`` and atomic writes of every output; ``mix`` is the effective mix
  (per source: images, weight, share of the draws, annotated categories; rule
  ``uniform-by-image`` when ``inputs.mix`` is unset), also logged at the start;
* initialisation (the ``init`` param of families that have one): ``scratch``, ``imagenet``
  (torchvision's ImageNet ResNet file, found in ``resources/weights/`` or the torch hub cache,
  or handed over as ``TrainInputs.init_file``), ``{file: PATH}`` (a torchvision ResNet state
  dict) or ``{from: EXPERIMENT, part: all|backbone|...}`` (warm start from that experiment's
  ``model.pt``, the ``init_file``: tensors whose names and shapes match). The resolved init
  (kind, file sha256, source experiment) is in the fingerprint and in ``model.pt``;
* one optimiser/schedule setup: ``bias_lr_factor`` (bias learning rate x factor, one extra
  parameter group) and linear warm-up over ``warmup`` iterations from ``warmup_factor``
  (null: from 1/warmup), then steps at ``lr_steps``, for every family that has these keys.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from overlapseg.utils.io import atomic_dir, atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)

MODEL_FORMAT = "overlapseg-model-2"
TRAINERS: dict[str, type["Trainer"]] = {}


def register(name: str) -> Callable[[type["Trainer"]], type["Trainer"]]:
    """Class decorator: make a trainer available under ``name`` (config ``model:`` value)."""
    def decorate(cls: type[Trainer]) -> type[Trainer]:
        if name in TRAINERS and TRAINERS[name] is not cls:
            raise ValueError(f"trainer name {name!r} registered twice")
        cls.name = name
        TRAINERS[name] = cls
        return cls
    return decorate


# ----------------------------------------------------------------------------- inputs
@dataclass
class DataRef:
    """A canonical dataset directory, optionally restricted to some images, with maps."""

    root: Path
    names: list[str] | None = None  # None: all images
    maps: Path | None = None  # directory of {name}.npz overlap-probability maps, if used
    source: str = "original"  # name of the source (original, ccce, copypaste, ...)
    annotated: tuple[str, ...] | None = None  # categories it annotates (None: the dataset's)

    def scope(self, dataset: Any = None) -> tuple[str, ...]:
        """Categories this source annotates: ``annotated``, else the dataset's
        ``info.annotated`` (``dataset``: its open CanonicalDataset, to avoid reading it again).
        A category outside the scope contributes no loss on this source's images."""
        if self.annotated is not None:
            return tuple(self.annotated)
        if dataset is None:
            from overlapseg.data.canonical import CATEGORY_IDS, CanonicalDataset

            if not (Path(self.root) / "annotations.json").is_file():
                return tuple(CATEGORY_IDS)  # not written yet (a fingerprint before the data exists)
            dataset = CanonicalDataset(self.root)
        return dataset.annotated


@dataclass
class TrainInputs:
    """Everything a trainer reads besides its params: the experiment's ``inputs:`` block.

    ``train``: the training sources; ``mix``: sampling weight of each source (None: images
    drawn uniformly from their union); ``map_variant``: overlap-probability map variant used by
    map-guided losses; ``teacher``: a trained model file for trainers that distil from one.
    """

    train: list[DataRef]
    val: DataRef | None = None
    mix: list[float] | None = None
    map_variant: str | None = None
    teacher: Path | None = None
    pool: str = "all"
    init_file: Path | None = None  # the file ``params.init`` needs, resolved by the workflow

    def data_digest(self) -> str:
        """sha256 of what the training data is: each source's image names and the bytes of its
        dataset (and maps) folder. Part of the checkpoint fingerprint, so a checkpoint trained
        on another split or an older synthetic set is never resumed."""
        h = hashlib.sha256()
        for ref in self.train:
            h.update(json.dumps([ref.source, ref.names]).encode())
            for folder in (ref.root, ref.maps):
                if folder is None or not Path(folder).is_dir():
                    continue
                for path in sorted(Path(folder).rglob("*")):
                    if path.is_file() and not path.name.startswith("."):
                        h.update(str(path.relative_to(folder)).encode())
                        h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()

    def describe(self) -> dict:
        """What identifies these inputs (no paths): part of the checkpoint fingerprint."""
        from overlapseg.data.canonical import CATEGORY_IDS

        partial = {r.source: list(r.scope()) for r in self.train
                   if tuple(r.scope()) != tuple(CATEGORY_IDS)}
        return {"sources": [r.source for r in self.train], "mix": self.mix,
                "map_variant": self.map_variant, "teacher": self.teacher is not None,
                **({"pool": self.pool} if self.pool != "all" else {}),
                **({"annotated": partial} if partial else {})}


# ----------------------------------------------------------------------------- helpers
def iteration_rng(seed: int, iteration: int) -> np.random.Generator:
    """RNG for one iteration: depends only on (seed, iteration), so resuming is exact."""
    return np.random.default_rng([seed, iteration])


def draw_items(rng: np.random.Generator, n_items: int, source_sizes: list[int] | None = None,
               mix: list[float] | None = None, k: int | None = None):
    """Indices of training items (the union of the sources, in source order).

    ``mix`` None: uniform over all items. Otherwise source ``s`` is drawn with probability
    ``mix[s] / sum(mix)`` and an item uniformly within it (empty sources drop out). ``k`` None:
    one index (int); else ``min(k, n_items)`` distinct indices (a batch).
    """
    if mix is None:
        if k is None:
            return int(rng.integers(n_items))
        return rng.choice(n_items, size=min(k, n_items), replace=False)
    if source_sizes is None or len(source_sizes) != len(mix) or sum(source_sizes) != n_items:
        raise ValueError(f"inputs.mix has {len(mix)} weights but the data has sources of sizes "
                         f"{source_sizes}")
    weights = np.concatenate([np.full(n, m / n) for n, m in zip(source_sizes, mix) if n])
    weights = weights / weights.sum()
    if k is None:
        return int(rng.choice(n_items, p=weights))
    return rng.choice(n_items, size=min(k, n_items), replace=False, p=weights)


_CODE_DIGEST: str | None = None


def code_digest() -> str:
    """sha256 of the overlapseg package's Python sources. Part of the checkpoint fingerprint:
    after a code change a forced rerun (``--forcerun train``) trains anew instead of resuming
    the final checkpoint of the old code; an interrupted job rerun on the same code resumes."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        _CODE_DIGEST = h.hexdigest()
    return _CODE_DIGEST


def iteration_torch_seed(seed: int, iteration: int) -> int:
    return int(np.random.SeedSequence([seed, iteration, 1]).generate_state(1, np.uint64)[0] >> 1)


def seed_everything(seed: int, device: str) -> None:
    """Seed every RNG and make CPU kernels deterministic (bitwise-reproducible runs)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device == "cpu":
        # torch.use_deterministic_algorithms(True) minus its first line, which imports
        # torch._inductor (and torch._dynamo: ~1.7 s per job) only to set the flag for
        # torch.compile, which overlapseg never uses; eager kernels read this C flag alone
        torch._C._set_deterministic_algorithms(True, warn_only=False)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def non_finite_param(params: Any, key: str = "") -> tuple[str, float] | None:
    """(dotted key, value) of the first NaN or infinite number in a params tree, else None."""
    if isinstance(params, dict):
        items = ((f"{key}.{k}" if key else str(k), v) for k, v in params.items())
    elif isinstance(params, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(params))
    else:
        is_bad = isinstance(params, float) and not math.isfinite(params)
        return (key, params) if is_bad else None
    for k, v in items:
        found = non_finite_param(v, k)
        if found:
            return found
    return None


def merge_params(defaults: dict, params: dict | None, what: str) -> dict:
    """``defaults`` overridden by ``params``; nested dicts merged; unknown keys are errors."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise KeyError(f"unknown {what} params: {unknown} (known: {sorted(defaults)})")
    out = copy.deepcopy(defaults)
    for key, value in params.items():
        if isinstance(defaults[key], dict) and value is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{what} param {key!r} must be a mapping, got {value!r}")
            bad = sorted(set(value) - set(defaults[key]))
            if bad:
                raise KeyError(f"unknown {what} {key} keys: {bad} (known: {sorted(defaults[key])})")
            out[key].update(value)
        else:
            out[key] = value
    return out


def state_bytes(obj: Any) -> bytes:
    """``torch.save`` through memory: file-based saving names zip records after the (random)
    temporary file, so saving to a buffer is what makes model files byte-identical."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_state(path: Path, obj: Any) -> None:
    data = state_bytes(obj)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class LossLog:
    """CSV of named losses per iteration (counted from 1); columns follow the names that arrive.

    On resume, rows past the checkpoint are dropped, so the log equals an uninterrupted run's.
    """

    def __init__(self, path: Path, resume_from: int = 0):
        self.path = Path(path)
        self.fields: list[str] | None = None
        rows: list[dict] = []
        if resume_from and self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or []) or None
                rows = [r for r in reader if int(r["iteration"]) <= resume_from]
        self._rows = rows
        self._rewrite()

    def _rewrite(self) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                if self.fields:
                    writer = csv.DictWriter(f, self.fields)
                    writer.writeheader()
                    writer.writerows(self._rows)

    def write(self, iteration: int, values: dict[str, float]) -> None:
        row = {"iteration": iteration, **{k: f"{float(v):.6g}" for k, v in values.items()}}
        new = [k for k in row if k not in (self.fields or [])]
        if new:  # first row, or a loss that appeared later (a head unfrozen mid-training)
            self.fields = (self.fields or []) + new
            self._rows.append(row)
            self._rewrite()
            return
        self._rows.append(row)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, restval="").writerow(row)


class _IterationBatches(Dataset):
    """Map-style dataset whose item ``it`` is the batch of iteration ``it``.

    Sampling depends only on (seed, iteration), so any number of DataLoader workers gives
    the same batches in the same order.
    """

    def __init__(self, trainer: "Trainer", data: Any, seed: int):
        self.trainer, self.data, self.seed = trainer, data, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, iteration: int) -> list:
        rng = iteration_rng(self.seed, iteration)
        return [self.trainer.sample_batch(self.data, rng)
                for _ in range(int(self.trainer.params["accumulate"]))]


def _no_collate(batch):
    return batch


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers prepare data; the main process owns the cores


def _all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()
               if torch.is_tensor(t) and t.is_floating_point())


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Base class: subclasses set ``DEFAULTS`` and implement the steps marked below."""

    name: ClassVar[str] = "base"
    #: params every trainer has; subclasses extend with ``{**Trainer.DEFAULTS, ...}``
    DEFAULTS: ClassVar[dict] = {
        "iterations": 100,
        "batch_size": 2,
        "checkpoint_every": 100,
        "threads": None,    # torch threads (Snakemake passes the job's threads)
        "workers": 0,       # DataLoader worker processes preparing batches
        "amp": "auto",      # auto | off | bf16 | fp16 (auto: off on CPU, bf16/fp16 on CUDA)
        "grad_clip": None,  # max gradient norm, or null
        "accumulate": 1,    # micro-batches per optimiser step (large models on small memory)
    }
    #: tiny params that train and predict in seconds on CPU (contract tests, benchmarks)
    SMOKE_PARAMS: ClassVar[dict] = {}
    #: params that only change inference (left out of the checkpoint fingerprint)
    INFERENCE_KEYS: ClassVar[tuple[str, ...]] = ()
    #: inputs this trainer can use besides images and annotations
    USES_MAPS: ClassVar[bool] = False
    #: methods that return named losses (a trainer with its own step lists its own)
    LOSS_METHODS: ClassVar[tuple[str, ...]] = ("losses",)
    #: instance models predict COCO results; generators (GANs) synthesise datasets instead
    PRODUCES_INSTANCES: ClassVar[bool] = True
    #: the semantic maps are the instances above a score threshold (``instance_outputs``), so
    #: the evaluator can rebuild them at a validation-chosen threshold
    SEMANTIC_FROM_INSTANCES: ClassVar[bool] = False
    USES_TEACHER: ClassVar[bool] = False
    #: the network has a torchvision ResNet backbone: ``init`` may be imagenet or {file: ...}
    IMAGENET_BACKBONE: ClassVar[bool] = False
    #: ``init: {from: ..., part: NAME}``: state-dict name prefixes each part copies
    INIT_PARTS: ClassVar[dict[str, tuple[str, ...]]] = {"all": ("",)}
    #: ``init: {from: ...}``: {own prefix: source prefix} for tensors the source lacks by name
    #: (e.g. DoNet's nucleus stage starts as the source detector's RPN and RoI heads)
    INIT_ALIASES: ClassVar[dict[str, str]] = {}
    _RUN_KEYS = ("iterations", "checkpoint_every", "threads", "workers")

    def __init__(self, params: dict | None = None, seed: int = 0, device: str = "cpu",
                 inputs: TrainInputs | None = None):
        self.params = self.resolve_params(params)
        self.seed = int(seed)
        self.device = device
        self.inputs = inputs
        self.experiment = "?"  # the model folder's name, set by train()/load()
        self.for_inference = False  # load(): weights come from model.pt, not a pretrained file
        self.train_scale = 1.0  # pixel scale of the training data (set by train()/load())
        self._fingerprint: str | None = None  # computed once: it hashes data and code
        self._init: dict | None = None  # resolved ``init`` (see resolved_init)
        self._init_source: Path | None = None  # the file it reads
        self.mix_record: dict | None = None  # the effective mix, set by train()
        self.check_inputs(inputs)

    # ---- params ------------------------------------------------------------------------
    @classmethod
    def resolve_params(cls, params: dict | None) -> dict:
        p = merge_params(cls.DEFAULTS, params, cls.name)
        bad = non_finite_param(p)
        if bad:  # torch would say e.g. "Invalid learning rate: nan" without the key
            raise ValueError(f"{cls.name} param {bad[0]}={bad[1]!r}: must be a finite number")
        cls.validate_params(p)
        return p

    @classmethod
    def validate_params(cls, p: dict) -> None:
        """Check value combinations (raise ValueError naming the param)."""
        if p["amp"] is False:  # YAML reads a bare `off` as false
            p["amp"] = "off"
        if p["amp"] not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"{cls.name} param amp={p['amp']!r}: use auto, off, bf16 or fp16")
        for key in ("iterations", "batch_size", "checkpoint_every", "accumulate"):
            if not isinstance(p[key], int) or p[key] < 1:
                raise ValueError(f"{cls.name} param {key}={p[key]!r}: must be a positive integer")
        if "init" in p:
            p["init"] = cls.check_init(p["init"])
        if "bias_lr_factor" in p and not (isinstance(p["bias_lr_factor"], (int, float))
                                          and p["bias_lr_factor"] > 0):
            raise ValueError(f"{cls.name} param bias_lr_factor={p['bias_lr_factor']!r}: must be > 0")
        factor = p.get("warmup_factor")
        if factor is not None and not (isinstance(factor, (int, float)) and 0 < factor <= 1):
            raise ValueError(f"{cls.name} param warmup_factor={factor!r}: must be in (0, 1] or null")

    @classmethod
    def check_init(cls, init: Any) -> Any:
        """The ``init`` param checked (``{from: X}`` gets ``part: all``); else a one-line error."""
        parts = "|".join(cls.INIT_PARTS)
        usage = (f"use scratch, {'imagenet, {file: PATH}, ' if cls.IMAGENET_BACKBONE else ''}"
                 f"or {{from: EXPERIMENT, part: {parts}}}")
        where = f"{cls.name} param init={init!r}"
        if init == "scratch":
            return init
        if init == "imagenet" or (isinstance(init, dict) and set(init) == {"file"}):
            if not cls.IMAGENET_BACKBONE:
                raise ValueError(f"{where}: {cls.name} has no ResNet backbone for ImageNet weights; {usage}")
            if isinstance(init, dict) and not (isinstance(init["file"], str) and init["file"]):
                raise ValueError(f"{where}: file must be a path")
            return init
        if isinstance(init, dict) and "from" in init and set(init) <= {"from", "part"}:
            if not (isinstance(init["from"], str) and init["from"]):
                raise ValueError(f"{where}: from must name an experiment")
            part = init.get("part", "all")
            if part not in cls.INIT_PARTS:
                raise ValueError(f"{where}: part must be one of {parts}")
            return {"from": init["from"], "part": part}
        raise ValueError(f"{where}: {usage}")

    def check_inputs(self, inputs: TrainInputs | None) -> None:
        """Reject inputs this trainer cannot use (called at config load and before training)."""
        if inputs is None:
            return
        if inputs.map_variant is not None and not self.USES_MAPS:
            raise ValueError(f"trainer {self.name!r} uses no overlap-probability maps "
                             f"(inputs.maps: {inputs.map_variant})")
        if inputs.teacher is not None and not self.USES_TEACHER:
            raise ValueError(f"trainer {self.name!r} does not distil from a teacher (inputs.teacher)")
        if inputs.mix is not None and inputs.train and len(inputs.mix) != len(inputs.train):
            raise ValueError(f"inputs.mix has {len(inputs.mix)} weights for {len(inputs.train)} sources")

    @property
    def mix(self) -> list[float] | None:
        """Sampling weight of each training source (``inputs.mix``), or None for uniform."""
        return self.inputs.mix if self.inputs is not None else None

    def draw(self, data: Any, rng: np.random.Generator, k: int | None = None):
        """Training item index (``k`` None) or ``k`` distinct ones, honouring ``inputs.mix``;
        ``data.source_sizes`` lists how many items each source contributed."""
        return draw_items(rng, len(data), getattr(data, "source_sizes", None), self.mix, k)

    def fingerprint(self) -> str:
        """What changes what is learned (computed once per run: it hashes the training data)."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        key = {k: v for k, v in self.params.items()
               if k not in self._RUN_KEYS and k not in self.INFERENCE_KEYS}
        key |= {"seed": self.seed, "trainer": self.name,
                "inputs": self.inputs.describe() if self.inputs else None,
                "data": self.inputs.data_digest() if self.inputs else None,
                "code": code_digest()}
        if "init" in self.params:  # what the weights start from, not only what was asked
            key["init_resolved"] = {k: v for k, v in self.resolved_init().items()
                                    if k in ("kind", "arch", "sha256", "source", "part")}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ---- initialisation ------------------------------------------------------------------
    def resolved_init(self) -> dict:
        """What the weights start from: ``{kind, frozen_bn[, arch, file, sha256, source, part,
        source_init]}``; read from ``model.pt`` when loaded for inference."""
        if self._init is None:
            self._init = self._resolve_init()
        return self._init

    @property
    def frozen_bn(self) -> bool:
        """Whether the network is built for pretrained weights (FrozenBN, ImageNet normalisation)."""
        return bool(self.resolved_init().get("frozen_bn", False))

    def _resolve_init(self) -> dict:
        init = self.params.get("init", "scratch")
        given = Path(self.inputs.init_file) if self.inputs is not None and self.inputs.init_file else None
        if init == "scratch":
            return {"kind": "scratch", "frozen_bn": False}
        from overlapseg.models import weights

        if init == "imagenet" or "file" in init:
            arch = weights.resnet_arch(self.params["depth"])
            if init == "imagenet":
                path = given or weights.find_imagenet_weights(arch)
                if path is None:
                    name = weights.imagenet_weights_file(arch)
                    raise FileNotFoundError(
                        f"{self.name} init imagenet: {name} is in neither {weights.WEIGHTS_DIR}/ nor "
                        f"{weights.hub_checkpoint_dir()}/; run `overlapseg weights fetch --arch {arch} "
                        f"--out {weights.WEIGHTS_DIR}` (needs internet) or put the file there")
            else:
                path = Path(init["file"])
                if given is not None and given.resolve() != path.resolve():
                    raise ValueError(f"{self.name} param init={init!r}: the workflow hands over another "
                                     f"file ({given})")
            if not path.is_file():
                raise FileNotFoundError(f"{path}: init weights file not found ({self.name} init {init!r})")
            self._init_source = path
            return {"kind": "imagenet" if init == "imagenet" else "file", "frozen_bn": True,
                    "arch": arch, "file": path.name, "sha256": sha256_file(path)}
        if given is None:
            raise ValueError(f"{self.name} param init={init!r}: needs experiment {init['from']!r}'s "
                             "model.pt as the init file (TrainInputs.init_file, --init-file)")
        source = read_model_file(given)
        self._init_source = given
        source_init = source.get("init") or {"kind": "scratch", "frozen_bn": False}
        return {"kind": "from", "frozen_bn": bool(source_init.get("frozen_bn", False)),
                "source": init["from"], "part": init["part"], "file": given.name,
                "sha256": sha256_file(given), "source_trainer": source["trainer"],
                "source_init": {k: v for k, v in source_init.items()
                                if k in ("kind", "file", "sha256", "source")}}

    def backbone_body(self, model: torch.nn.Module) -> torch.nn.Module:
        """The torchvision ResNet inside ``model`` that ImageNet weights go into."""
        raise NotImplementedError(f"{self.name}: no ResNet backbone")

    def apply_init(self, model: torch.nn.Module) -> None:
        """Load the resolved init's weights into the freshly built ``model`` (logged, recorded)."""
        init = self.resolved_init()
        if init["kind"] == "scratch":
            return
        from overlapseg.models import weights

        path = self._init_source
        if init["kind"] in ("imagenet", "file"):
            n = weights.load_resnet_weights(self.backbone_body(model), path, init["arch"])
            init["loaded"] = n
            log.info("init %s: %d %s tensors from %s (sha256 %s)", init["kind"], n, init["arch"],
                     path, init["sha256"][:12])
            return
        source = read_model_file(path)["state_dict"]
        prefixes = self.INIT_PARTS[init["part"]]
        loaded, skipped = weights.copy_matching(model, source, prefixes, self.INIT_ALIASES)
        if not loaded:
            raise ValueError(f"{path}: no tensor of experiment {init['source']!r} "
                             f"({init['source_trainer']}) matches this {self.name} model by name and "
                             f"shape (part {init['part']})")
        own = [k for k in model.state_dict() if k.startswith(prefixes)]
        init["loaded"], init["skipped"] = len(loaded), len(skipped)
        log.info("warm start from %s (part %s): loaded %d of this model's %d tensors%s; skipped %d "
                 "source tensors (name or shape differ)%s", init["source"], init["part"], len(loaded),
                 len(own), "" if len(loaded) == len(own) else
                 f" (not loaded: {', '.join(sorted(set(own) - set(loaded))[:8])}"
                 f"{', ...' if len(own) - len(loaded) > 8 else ''})",
                 len(skipped), f": {', '.join(skipped[:8])}{', ...' if len(skipped) > 8 else ''}"
                 if skipped else "")

    # ---- steps subclasses supply ---------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def load_data(self, refs: list[DataRef]) -> Any:
        """Training data in memory (anything ``sample_batch`` understands)."""
        raise NotImplementedError

    def sample_batch(self, data: Any, rng: np.random.Generator) -> Any:
        """The batch of one iteration, drawn with ``rng`` only (runs in DataLoader workers)."""
        raise NotImplementedError

    def losses(self, model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Named scalar losses of one batch; the default step minimises their sum."""
        raise NotImplementedError

    def predict_image(self, model: torch.nn.Module, image: np.ndarray,
                      image_id: int) -> tuple[list[dict], dict[str, np.ndarray]]:
        """COCO results and binary semantic maps of one grey float image."""
        raise NotImplementedError

    # ---- steps with defaults -------------------------------------------------------------
    def on_data_loaded(self, model: torch.nn.Module, data: Any) -> None:
        """Hook after model and data exist (e.g. output-bias priors)."""

    def parameter_groups(self, model: torch.nn.Module) -> list:
        """Trainable parameters; with ``bias_lr_factor`` != 1, two groups: weights at ``lr`` and
        biases at ``lr * bias_lr_factor`` (IRNet's recipe, after maskrcnn-benchmark)."""
        named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
        factor = float(self.params.get("bias_lr_factor", 1.0))
        if factor == 1.0:
            return [q for _, q in named]
        is_bias = [n.rsplit(".", 1)[-1] == "bias" for n, _ in named]
        return [{"params": [q for (_, q), b in zip(named, is_bias) if not b]},
                {"params": [q for (_, q), b in zip(named, is_bias) if b],
                 "lr": float(self.params["lr"]) * factor}]

    def configure_optimizers(self, model: torch.nn.Module) -> dict[str, torch.optim.Optimizer]:
        p = self.params
        params = self.parameter_groups(model)
        if p.get("optimizer", "adamw") == "sgd":
            opt = torch.optim.SGD(params, lr=float(p["lr"]), momentum=float(p.get("momentum", 0.9)),
                                  weight_decay=float(p["weight_decay"]))
        elif p.get("optimizer", "adamw") == "adamw":
            opt = torch.optim.AdamW(params, lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
        else:
            raise ValueError(f"{self.name}: unknown optimizer {p['optimizer']!r} (sgd or adamw)")
        return {"model": opt}

    def lr_factor(self, iteration: int) -> float:
        """Learning-rate multiplier at ``iteration``: linear warm-up over ``warmup`` iterations
        from ``warmup_factor`` (Detectron2/maskrcnn-benchmark's ramp; null: from 1/warmup,
        reaching 1 at the last warm-up iteration), then 10x drops at ``lr_steps``."""
        p = self.params
        warmup = int(p.get("warmup", 0) or 0)
        start = p.get("warmup_factor")
        if not warmup or iteration >= warmup:
            warm = 1.0
        elif start is None:
            warm = (iteration + 1) / warmup
        else:
            warm = start + (1 - start) * iteration / warmup
        steps = [int(f * p["iterations"]) for f in p.get("lr_steps", [])]
        return warm * 0.1 ** sum(iteration >= s for s in steps)

    def validate(self, model: torch.nn.Module, val: Any) -> dict[str, float]:
        """Validation numbers logged at checkpoints (``val`` from ``load_data([inputs.val])``)."""
        return {}

    def wants_validation(self) -> bool:
        return False

    def training_step(self, model, micro_batches: list, optimizers, scaler,
                      iteration: int) -> dict[str, torch.Tensor]:
        """One optimisation step over ``accumulate`` micro-batches; returns the mean named losses."""
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for batch in micro_batches:
            with self.autocast():
                losses = self.losses(model, batch)
            losses = {k: v.float() for k, v in losses.items()}
            total = sum(losses.values())
            self.check_finite(total, iteration, losses)
            scaler.scale(total / len(micro_batches)).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach() / len(micro_batches)
        losses = sums
        total = sum(losses.values())
        if self.params["grad_clip"]:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(self.params["grad_clip"]))
        scaler.step(opt)
        scaler.update()
        return {**losses, "loss": total}

    # ---- the loop (written once) --------------------------------------------------------
    def amp_dtype(self) -> torch.dtype | None:
        mode = self.params["amp"]
        if mode == "off" or not self.device.startswith("cuda"):
            return None
        if mode == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]

    def autocast(self):
        dtype = self.amp_dtype()
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()

    def check_finite(self, total: torch.Tensor, iteration: int, parts: dict) -> None:
        value = float(total.detach())
        if not math.isfinite(value):
            detail = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in parts.items())
            raise FloatingPointError(
                f"experiment {self.experiment!r}: non-finite training loss at iteration "
                f"{iteration + 1} ({detail}); lower the learning rate or check the data")

    def _loader(self, data: Any, start: int):
        dataset = _IterationBatches(self, data, self.seed)
        workers = int(self.params["workers"] or 0)
        return DataLoader(dataset, batch_size=None, sampler=range(start, int(self.params["iterations"])),
                          num_workers=workers, collate_fn=_no_collate,
                          pin_memory=self.device.startswith("cuda"),
                          worker_init_fn=_worker_init if workers else None,
                          persistent_workers=False, prefetch_factor=2 if workers else None)

    def to_device(self, batch: Any) -> Any:
        """Move a batch (tensors nested in lists/tuples/dicts) to the training device."""
        if torch.is_tensor(batch):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def train(self, out_dir: Path) -> Path:
        """Train (resuming a matching checkpoint in ``out_dir``); writes ``out_dir/model.pt``."""
        if self.inputs is None or not self.inputs.train:
            raise ValueError(f"{self.name}: no training data given")
        out_dir = Path(out_dir)
        self.experiment = out_dir.name
        if "init" in self.params:
            self.resolved_init()  # a missing or unreadable init file fails before any work
        out_dir.mkdir(parents=True, exist_ok=True)
        p = self.params
        set_threads(p["threads"])
        seed_everything(self.seed, self.device)
        self.train_scale = self._training_scale()
        self._warn_if_no_instances()
        data = self.load_data(self.inputs.train)
        self.mix_record = self.effective_mix(data)
        val = (self.load_data([self.inputs.val])
               if self.inputs.val is not None and self.wants_validation() else None)
        model = self.build_model()
        self.on_data_loaded(model, data)
        if "init" in p:
            self.apply_init(model)  # after on_data_loaded: a warm start keeps trained biases
        model = model.to(self.device)
        optimizers = self.configure_optimizers(model)
        schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, self.lr_factor) for k, o in optimizers.items()}
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype() == torch.float16)
        start = self._resume(out_dir / "checkpoints" / "last.pt", model, optimizers, schedulers, scaler)
        loss_log = LossLog(out_dir / "log.csv", resume_from=start)
        total_it, every = int(p["iterations"]), int(p["checkpoint_every"])
        model.train()
        t0 = time.perf_counter()
        batches = self._loader(data, start) if start < total_it else []
        progress = tqdm(batches, desc=f"{self.name} {out_dir.name}", initial=start, total=total_it,
                        mininterval=10)
        for it, batch in enumerate(progress, start=start):
            torch.manual_seed(iteration_torch_seed(self.seed, it))
            if hasattr(model, "set_progress"):
                model.set_progress(it / total_it)
            losses = self.training_step(model, self.to_device(batch), optimizers, scaler, it)
            for sched in schedulers.values():
                sched.step()
            done = it + 1
            row = {k: float(v.detach()) for k, v in losses.items()}
            row |= {f"lr_{k}" if len(optimizers) > 1 else "lr": o.param_groups[0]["lr"]
                    for k, o in optimizers.items()}
            at_checkpoint = done % every == 0 or done == total_it
            if at_checkpoint and val is not None:
                row |= {f"val_{k}": v for k, v in self.validate(model, val).items()}
                model.train()
            loss_log.write(done, row)
            if at_checkpoint:
                self._save_checkpoint(out_dir / "checkpoints" / "last.pt", model, optimizers,
                                      schedulers, scaler, done)
        seconds = time.perf_counter() - t0
        model_path = out_dir / "model.pt"
        write_state(model_path, self.export(model))
        if total_it > start:
            write_json(out_dir / "timing.json", {
                "device": self.device, "threads": torch.get_num_threads(),
                "workers": int(p["workers"] or 0), "iterations_run": total_it - start,
                "seconds": round(seconds, 3),
                "seconds_per_iteration": round(seconds / (total_it - start), 5)})
        return model_path

    def _warn_if_no_instances(self) -> None:
        """An instance model trained on images without a single annotated instance learns
        background only; it trains without error, so say it once, naming the data."""
        if not self.PRODUCES_INSTANCES:
            return
        from overlapseg.data.canonical import CanonicalDataset

        n_images = n_instances = 0
        for ref in self.inputs.train:
            ds = CanonicalDataset(ref.root)
            names = ref.names if ref.names is not None else ds.names
            n_images += len(names)
            n_instances += sum(len(ds.annotations(n)) for n in names)
        if n_images and not n_instances:
            log.warning("experiment %r: its %d training image(s) in %s hold no annotated instance; "
                        "the model can only learn background", self.experiment, n_images,
                        ", ".join(str(r.root) for r in self.inputs.train))

    def effective_mix(self, data: Any) -> dict:
        """The mix the draws follow (:func:`~overlapseg.data.training_sources.resolve_mix`:
        per source its images, weight and share; ``uniform-by-image`` when ``inputs.mix`` is
        unset), logged once and recorded in ``model.pt``."""
        from overlapseg.data.training_sources import resolve_mix

        sizes = getattr(data, "source_sizes", None)
        if sizes is None or len(sizes) != len(self.inputs.train):
            from overlapseg.data.canonical import CanonicalDataset

            sizes = [len(r.names) if r.names is not None else len(CanonicalDataset(r.root))
                     for r in self.inputs.train]
        record = resolve_mix([r.source for r in self.inputs.train], sizes, self.mix)
        record["annotated"] = [list(r.scope()) for r in self.inputs.train]
        if len(record["sources"]) > 1:
            log.info("experiment %r: draws %s (%s)", self.experiment, ", ".join(
                f"{s} {100 * sh:.1f}% ({n} images, annotates {'+'.join(a)})" for s, sh, n, a in
                zip(record["sources"], record["shares"], record["images"], record["annotated"])),
                record["rule"] if self.mix is None else
                "inputs.mix " + ":".join(f"{w:g}" for w in self.mix))
        return record

    def _training_scale(self) -> float:
        """Pixel scale of the real training data (the original source, else the val split)."""
        from overlapseg.data.canonical import CanonicalDataset

        refs = [r for r in self.inputs.train if r.source == "original"] or \
            ([self.inputs.val] if self.inputs.val is not None else [])
        return CanonicalDataset(refs[0].root).scale if refs else 1.0

    def export(self, model: torch.nn.Module) -> dict:
        return {"format": MODEL_FORMAT, "trainer": self.name, "params": self.params,
                "seed": self.seed, "iterations": int(self.params["iterations"]),
                "train_scale": self.train_scale,
                "inputs": self.inputs.describe() if self.inputs else None,
                **({"mix": self.mix_record} if self.mix_record is not None else {}),
                **({"init": self.resolved_init()} if "init" in self.params else {}),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}

    def _save_checkpoint(self, path: Path, model, optimizers, schedulers, scaler, iteration: int) -> None:
        if not _all_finite(model):
            raise FloatingPointError(f"experiment {self.experiment!r}: non-finite weights after "
                                     f"iteration {iteration}; no checkpoint written")
        write_state(path, {
            "fingerprint": self.fingerprint(), "trainer": self.name, "iteration": iteration,
            "model": model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
            "scaler": scaler.state_dict()})

    def _resume(self, path: Path, model, optimizers, schedulers, scaler) -> int:
        if not path.is_file():
            return 0
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # truncated by a kill during an old, non-atomic write
            log.warning("%s: unreadable checkpoint ignored (%s)", path, exc)
            return 0
        if state.get("fingerprint") != self.fingerprint():
            log.warning("%s: checkpoint written with other params, seed or inputs; training "
                        "from scratch", path)
            return 0
        if state["iteration"] > int(self.params["iterations"]):
            log.warning("%s: checkpoint is past iterations=%d; training from scratch", path,
                        self.params["iterations"])
            return 0
        model.load_state_dict(state["model"])
        for k, o in optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        log.info("%s: resuming from iteration %d", path.parent.parent, state["iteration"])
        return int(state["iteration"])

    # ---- inference ------------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu",
             params: dict | None = None) -> tuple["Trainer", torch.nn.Module]:
        """Trainer (stored params, inference keys overridable by ``params``) and model in eval mode."""
        path = Path(model_dir) / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: trained model not found")
        state = read_model_file(path)
        klass = get_trainer(state["trainer"])
        if cls is not Trainer and not issubclass(klass, cls):
            raise ValueError(f"{path}: model of trainer {state['trainer']!r}, not {cls.name!r}")
        stored = {k: v for k, v in state["params"].items()
                  if not (k in RETIRED_PARAMS and v == RETIRED_PARAMS[k])}
        overrides = {k: v for k, v in (params or {}).items() if k in klass.INFERENCE_KEYS + ("threads",)}
        trainer = klass({**stored, **overrides}, state["seed"], device)
        trainer.experiment = Path(model_dir).name
        trainer.for_inference = True
        trainer.train_scale = float(state.get("train_scale", 1.0))
        trainer._init = state.get("init") or {"kind": "scratch", "frozen_bn": False}
        model = trainer.build_model()
        try:
            model.load_state_dict(state["state_dict"])
        except RuntimeError as exc:  # weights of another architecture or of edited params
            raise ValueError(f"{path}: not a readable overlapseg model (weights do not fit a "
                             f"{klass.name!r} model: {str(exc).splitlines()[0]})") from None
        return trainer, model.to(device).eval()

    @classmethod
    def check_inference_params(cls, params: dict, source: str) -> None:
        """Reject params that cannot change at inference (``predict --params``): unknown keys
        and training keys would otherwise be ignored silently. ``source`` names the file."""
        allowed = set(cls.INFERENCE_KEYS) | {"threads"}
        unknown = sorted(k for k in params if k not in cls.DEFAULTS)
        if unknown:
            import difflib

            close = difflib.get_close_matches(str(unknown[0]), sorted(allowed), n=1)
            raise ValueError(f"{source}: unknown {cls.name} param(s) {', '.join(map(str, unknown))}; "
                             f"inference params: {', '.join(sorted(allowed))}"
                             + (f"; did you mean {close[0]!r}?" if close else ""))
        training = sorted(k for k in params if k not in allowed)
        if training:
            raise ValueError(f"{source}: {', '.join(training)} only change(s) training (retrain to "
                             f"change it); inference params of {cls.name}: {', '.join(sorted(allowed))}")

    def predict_at_scale(self, model, image: np.ndarray, image_id: int, factor: float):
        """:meth:`predict_image` on ``image`` resampled by ``factor``, outputs mapped back."""
        if abs(factor - 1) <= 1e-9:
            return self.predict_image(model, image, image_id)
        from overlapseg.data.canonical import decode_segmentation, encode_mask
        from overlapseg.models.scale import resample, resize_mask

        shape = image.shape
        small = resample(image, factor)
        found, semantic = self.predict_image(model, small, image_id)
        for r in found:
            mask = resize_mask(decode_segmentation(r["segmentation"], *small.shape), shape)
            r["segmentation"] = encode_mask(mask)
        semantic = {k: resize_mask(v, shape).astype(np.uint8) for k, v in semantic.items()}
        return [r for r in found if decode_segmentation(r["segmentation"], *shape).any()], semantic

    def predict(self, model: torch.nn.Module, data: DataRef, out_json: Path, semantic_dir: Path) -> None:
        """COCO results of every image of ``data`` plus one semantic ``{name}.npz`` per image."""
        from overlapseg.data.canonical import CanonicalDataset, DataError
        from overlapseg.data.preprocess import to_float_gray

        set_threads(self.params["threads"])
        ds = CanonicalDataset(data.root)
        names = data.names if data.names is not None else ds.names
        factor = ds.scale / self.train_scale  # test images go to the training pixel scale
        if abs(factor - 1) > 1e-9:
            log.info("%s: images resampled by %.4g to the model's training pixel scale",
                     data.root, factor)
        results: list[dict] = []
        with atomic_dir(semantic_dir) as tmp_dir, torch.no_grad():
            for name in tqdm(names, desc=f"predict {self.experiment}", mininterval=10):
                if name not in ds.images:
                    raise DataError(ds.annotation_file, f"image {name!r} not in dataset")
                image = to_float_gray(ds.load_image(name))
                found, semantic = self.predict_at_scale(model, image, ds.images[name]["id"], factor)
                results += found
                buffer = io.BytesIO()
                np.savez_compressed(buffer, **semantic)
                (tmp_dir / f"{name}.npz").write_bytes(buffer.getvalue())
        write_json(out_json, results)


#: params of older model files that no longer exist, at the value that means "as today"
RETIRED_PARAMS = {"pretrained_backbone": None}
_MODEL_KEYS = ("trainer", "params", "seed", "state_dict")


def read_model_file(path: Path) -> dict:
    """The dict stored in a ``model.pt``; a missing, truncated, empty or foreign file is one
    line naming it (torch raises EOFError, UnpicklingError, RuntimeError or a bare OSError)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: trained model not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except PermissionError:
        raise
    except Exception as exc:  # noqa: BLE001 - every way a damaged file fails to unpickle
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a readable overlapseg model ({detail}); "
                         "retrain it or restore the file") from None
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a readable overlapseg model (no {MODEL_FORMAT} record)")
    missing = [k for k in _MODEL_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path}: not a readable overlapseg model (lacks {', '.join(missing)})")
    return state


def get_trainer(name: str) -> type[Trainer]:
    """The trainer registered as ``name``. A module named like the trainer is imported alone,
    so a SEU-Net job does not pay for importing torchvision (~2 s per Snakemake job)."""
    import importlib.util

    module = f"{__package__}.{name}"
    if name not in TRAINERS and importlib.util.find_spec(module) is not None:
        importlib.import_module(module)
    if name not in TRAINERS:
        load_trainers()
    if name not in TRAINERS:
        raise ValueError(f"unknown model type {name!r}; known: {', '.join(sorted(TRAINERS))}")
    return TRAINERS[name]


_NOT_TRAINERS = {"base", "api", "cli"}


def load_trainers() -> dict[str, type[Trainer]]:
    """Import every module of ``overlapseg.train`` (each registers its trainers)."""
    import importlib
    import pkgutil

    import overlapseg.train as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_TRAINERS:
            importlib.import_module(f"{package.__name__}.{info.name}")
    return TRAINERS
