"""Resolve and load CMI-RM checkpoints and the MuQ-MuLan towers, from local folders or the hub.

The released layout is a folder (or hub repo, e.g. ``HaiwenXia/CMI-RM``) holding
``model.safetensors`` + ``config.yaml``; CMI-RM checkpoints are read from safetensors only. The
frozen towers are built from the MuQ-MuLan hub config (``config.yaml: model_name``) and loaded from
its weights (``mulan.audio.*`` -> ``audio_module.*``, ``mulan.text.*`` -> ``text_module.*``); then
every key of the CMI-RM checkpoint is overlaid. Tower checkpoints are resolved as
``PyTorchModelHubMixin`` does: ``model.safetensors`` when the folder or repo has it, else
``pytorch_model.bin`` (what ``OpenMuQ/MuQ-MuLan-large`` ships), which is unpickled weights-only and
converted once into the cmirm cache (see `cmirm_plugin.model.weights`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, XLMRobertaConfig

from cmirm_plugin.errors import CheckpointError
from cmirm_plugin.hub import download_hint, is_repo_id
from cmirm_plugin.model.config import CMIRMConfig
from cmirm_plugin.model.mulan import MuLanConfig
from cmirm_plugin.model.muq import MuQConfig
from cmirm_plugin.model.reward_model import TOWER_PREFIXES, CMIRewardModel, TowerConfigs
from cmirm_plugin.model.weights import PICKLE_WEIGHTS_NAME, WEIGHTS_NAME, read_safetensors, read_weights, unshared

#: Weight files of a hub-mixin style checkpoint (the towers), in the order they are looked for.
TOWER_WEIGHTS_NAMES = (WEIGHTS_NAME, PICKLE_WEIGHTS_NAME)
CONFIG_NAME = "config.yaml"
#: MuQ-MuLan checkpoint prefix -> CMI-RM module prefix.
HUB_TOWER_PREFIXES = {"mulan.audio.": "audio_module.", "mulan.text.": "text_module."}
#: MuQ-MuLan parts CMI-RM does not keep (latent projections and the contrastive module).
HUB_UNUSED_PREFIXES = ("mulan.audio_to_latents.", "mulan.text_to_latents.", "mulan.contrast.")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_file(repo_or_dir: str | Path, filename: str) -> Path:
    """Find ``filename`` in a local folder or a hub repo (hub cache first; works with HF_HUB_OFFLINE=1)."""
    return resolve_first(repo_or_dir, (filename,))


def resolve_tower_weights(repo_or_dir: str | Path) -> Path:
    """The weights of a hub-mixin style checkpoint: ``model.safetensors`` if present, else ``pytorch_model.bin``."""
    return resolve_first(repo_or_dir, TOWER_WEIGHTS_NAMES)


def _names(filenames: tuple[str, ...], conjunction: str, quote: bool = True) -> str:
    """``'a'``, ``'a' or 'b'``, ``'a', 'b' or 'c'`` (for messages)."""
    names = [f"'{n}'" if quote else n for n in filenames]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def resolve_first(repo_or_dir: str | Path, filenames: tuple[str, ...]) -> Path:
    """The first of ``filenames`` that a local folder or hub repo holds; an error names them all and the repo.

    On the hub only a file that is absent (from the repo, or from the cache when offline) moves on
    to the next name, so each file is downloaded at most once and only the one used is downloaded.
    """
    local = Path(repo_or_dir).expanduser()
    if local.is_dir():
        for filename in filenames:
            if (local / filename).is_file():
                return local / filename
        present = sorted(p.name for p in local.iterdir())
        hint = ""
        if filenames == (WEIGHTS_NAME,) and any(p.endswith(PICKLE_SUFFIXES) for p in present):
            hint = (" CMI-RM checkpoints are read from safetensors only (pickle files such as .bin/.pt are not "
                    "unpickled for them).")
        missing = ("" if len(filenames) == 1 else "both " if len(filenames) == 2 else "all of ") + \
            _names(filenames, "and", quote=False)
        raise CheckpointError(f"'{local}': missing {missing} (folder holds: {present or 'nothing'}).{hint}")
    name = str(repo_or_dir)
    if not is_repo_id(name):
        expected = _names(filenames, "or", quote=False)
        raise CheckpointError(f"'{name}': no such directory (expected a folder with {expected}, or a hub repo id)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id=name, filename=filename))
        except EntryNotFoundError as exc:   # absent from the repo, or (offline) from the cache: try the next
            failure = exc
        except (RepositoryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
            failure = exc
            break
    raise CheckpointError(
        f"could not get {_names(filenames, 'or')} of hub repo '{name}' ({type(failure).__name__}: "
        f"{str(failure).splitlines()[0]}). {download_hint(name, filenames)}"
    ) from failure


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"'{path}': not valid JSON ({exc})") from exc


def load_tower_configs(model_name: str) -> TowerConfigs:
    """The MuQ-MuLan, MuQ and XLM-R configs named by ``model_name`` (a hub id or a folder)."""
    mulan = MuLanConfig.from_dict(_read_json(resolve_file(model_name, "config.json")))
    muq = MuQConfig.from_dict(_read_json(resolve_file(mulan.audio_model_name, "config.json")))
    xlmr = XLMRobertaConfig.from_dict(_read_json(resolve_file(mulan.text_model_name, "config.json")))
    return TowerConfigs(mulan, muq, xlmr)


def load_tokenizer(text_model_name: str):
    """The XLM-R tokenizer of the text backbone (fast tokenizer; never remote code).

    Its files are resolved like every other file (folder, or hub cache/download) into one folder,
    which is then handed to transformers, so one code path decides where files come from.
    """
    folder = resolve_file(text_model_name, "config.json").parent
    found = []
    for name in ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json"):
        try:
            found.append(resolve_file(text_model_name, name).name)
        except CheckpointError:
            pass  # which of these exist depends on how the tokenizer was saved
    if not {"tokenizer.json", "sentencepiece.bpe.model"} & set(found):
        raise CheckpointError(f"'{text_model_name}': no tokenizer files (tokenizer.json or sentencepiece.bpe.model)")
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def hub_to_model_keys(hub_state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map MuQ-MuLan checkpoint keys to CMI-RM tower keys; return (mapped, keys that are not towers)."""
    mapped, other = {}, []
    for key, value in hub_state.items():
        for src, dst in HUB_TOWER_PREFIXES.items():
            if key.startswith(src):
                mapped[dst + key[len(src):]] = value
                break
        else:
            other.append(key)
    return mapped, other


def model_to_hub_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `hub_to_model_keys` for the tower tensors of a CMI-RM state dict."""
    out = {}
    for key, value in state.items():
        for src, dst in HUB_TOWER_PREFIXES.items():
            if key.startswith(dst):
                out[src + key[len(dst):]] = value
    return out


@dataclass
class LoadReport:
    """What a load did, in one readable summary (the reference silently ignores all of this)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    #: The MuQ-MuLan weights file used (``model.safetensors`` or ``pytorch_model.bin``), and the file its
    #: tensors were read from: the same file, or the safetensors copy of a ``.bin`` in the conversion cache.
    tower_weights: str = ""
    tower_weights_read: str = ""
    tower_keys_from_hub: int = 0
    overlaid_tower_keys: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    missing_towers: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unexpected_hub: list[str] = field(default_factory=list)
    upcast: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        via = f" (via its converted copy {self.tower_weights_read})" if self.tower_weights_read != self.tower_weights else ""
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}; {self.tower_keys_from_hub} tower tensors from "
                 f"the MuQ-MuLan checkpoint {self.tower_weights}{via}"]
        for label, keys in (("overlaid tower keys", self.overlaid_tower_keys),
                            ("MISSING (left at initial values)", self.missing),
                            ("missing tower keys (random init!)", self.missing_towers),
                            ("unexpected keys (ignored)", self.unexpected),
                            ("unexpected MuQ-MuLan keys (ignored)", self.unexpected_hub)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                lines.append(f"  {label}: {shown}")
        if self.upcast:
            kinds = sorted(set(self.upcast.values()))
            lines.append(f"  {len(self.upcast)} tensors cast to the model dtype from {', '.join(kinds)}")
        return "\n".join(lines)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.missing_towers or self.unexpected)


def overlay(model: torch.nn.Module, state: Mapping[str, torch.Tensor], report: LoadReport,
            tower_source: bool = False) -> None:
    """Copy ``state`` into ``model`` non-strictly; a shape mismatch is an error naming key and shapes."""
    own = model.state_dict()
    accepted = {}
    for key, value in state.items():
        if key not in own:
            (report.unexpected_hub if tower_source else report.unexpected).append(key)
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{report.source}: shape mismatch for '{key}': checkpoint {tuple(value.shape)} vs model "
                f"{tuple(own[key].shape)} (does config.yaml match this checkpoint?)"
            )
        if value.dtype != own[key].dtype and value.is_floating_point():
            report.upcast[key] = str(value.dtype).replace("torch.", "")
        accepted[key] = value.to(own[key].dtype)
    model.load_state_dict(accepted, strict=False)
    if tower_source:
        report.tower_keys_from_hub += len(accepted)
    else:
        report.loaded.extend(accepted)
        report.overlaid_tower_keys.extend(k for k in accepted if k.startswith(TOWER_PREFIXES))


def build_model(config: CMIRMConfig, seed: int = 0) -> tuple[CMIRewardModel, LoadReport]:
    """Build CMI-RM for ``config``: tower configs, tokenizer and tower weights from ``model_name``.

    Construction uses its own RNG stream (``seed``), so it never changes the caller's RNG state,
    and a model built twice from the same config starts from the same weights.
    """
    towers = load_tower_configs(config.model_name)
    tokenizer = load_tokenizer(towers.mulan.text_model_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CMIRewardModel(config, towers, tokenizer)
    report = LoadReport(source=config.model_name)
    weights = read_weights(resolve_tower_weights(config.model_name))
    report.tower_weights, report.tower_weights_read = str(weights.path), str(weights.read_from)
    mapped, other = hub_to_model_keys(weights.state)
    report.unexpected_hub.extend(k for k in other if not k.startswith(HUB_UNUSED_PREFIXES))
    overlay(model, mapped, report, tower_source=True)
    tower_keys = {k for k in model.state_dict() if k.startswith(TOWER_PREFIXES)}
    report.missing_towers = sorted(tower_keys - set(mapped))
    return model, report


def load_pretrained(path_or_id: str | Path, device: str | torch.device = "cpu") -> tuple[CMIRewardModel, LoadReport]:
    """Load a released-layout checkpoint (folder or hub repo); see the module docstring."""
    source = str(path_or_id)
    local = Path(source).expanduser()
    if local.is_file():
        raise CheckpointError(f"'{local}': expected the checkpoint folder (holding {WEIGHTS_NAME} + {CONFIG_NAME}), "
                              f"not a file")
    config = CMIRMConfig.from_yaml(resolve_file(source, CONFIG_NAME))
    weights = resolve_file(source, WEIGHTS_NAME)
    state = read_safetensors(weights)
    model, report = build_model(config)
    report.source = str(weights)
    overlay(model, state, report)
    report.missing = sorted(k for k in model.trainable_state_dict() if k not in state and not k.startswith(TOWER_PREFIXES))
    model.to(device).eval()
    return model, report


def save_pretrained(model: CMIRewardModel, directory: str | Path) -> Path:
    """Write ``config.yaml`` + ``model.safetensors`` in the released layout (towers only where they train)."""
    return save_state_dict(model.config, model.trainable_state_dict(), directory)


def save_state_dict(config: CMIRMConfig, state: Mapping[str, torch.Tensor], directory: str | Path) -> Path:
    """Write ``config`` and an explicit ``state`` (module-path keys) in the released layout.

    For state dicts that are not a plain model's, e.g. with LoRA weights merged into tower tensors;
    tower keys present in ``state`` are overlaid on the MuQ-MuLan weights when loading.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.to_yaml(directory / CONFIG_NAME)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    # The `conv` downsampler shares one stage under several names; safetensors stores each name once.
    save_file(unshared(tensors), str(directory / WEIGHTS_NAME), metadata={"format": "pt", "producer": "cmirm"})
    return directory
