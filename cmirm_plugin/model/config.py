"""Typed CMI-RM configuration that reads and writes the released ``config.yaml`` schema (spec §3.2).

The YAML may be flat or nested under ``model:``. Unknown *values* (a kind, mode or attention mode
we do not implement) are errors that name the field; unknown *keys* are kept verbatim and written
back, with a warning, so a newer config round-trips without losing anything.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from cmirm_plugin.errors import ConfigError

#: Downsampler kind aliases (spec §2.4) -> canonical kind.
DOWNSAMPLER_KINDS = {
    "none": "none",
    "mean": "meanpool", "meanpool": "meanpool",
    "meanpool+mlp": "meanpool+mlp", "mean+mlp": "meanpool+mlp", "baseline1": "meanpool+mlp", "b1": "meanpool+mlp",
    "conv*2": "conv*2", "baseline2": "conv*2", "b2": "conv*2",
    "conv": "conv", "baseline2simple": "conv", "b2s": "conv",
    "gluconv*2+pw": "gluconv*2+pw", "baseline3": "gluconv*2+pw", "b3": "gluconv*2+pw",
}
#: Keyword options each canonical kind accepts (besides ``factor``).
DOWNSAMPLER_OPTIONS = {
    "none": set(),
    "meanpool": set(),
    "meanpool+mlp": {"mlp_ratio", "dropout", "pre_mlp"},
    "conv*2": {"kernel_size", "use_layernorm"},
    "conv": {"kernel_size", "use_layernorm", "stage"},
    "gluconv*2+pw": {"kernel_size", "use_layernorm"},
}
MODES = ("concat_text_late", "concat_text_early", "text_only")
ATTENTION_MODES = ("SA", "CA")


def _typed(field_name: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (int, float or bool), or a `ConfigError` naming the field."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind is float or float(value).is_integer():
            return kind(value)
    raise ConfigError(f"config field '{field_name}': expected {kind.__name__}, got {value!r}")


def _mapping(field_name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"config field '{field_name}': expected a mapping, got {value!r}")
    return value


def _choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"config field '{field_name}': unknown value {value!r}; expected one of {list(allowed)}")
    return value


@dataclass
class NullSpec:
    """Modality-dropout probability and learned null-embedding length of one modality."""

    dropout: float
    length: int = 10


@dataclass
class NullEmbeddingConfig:
    """Null embeddings and training-time modality dropout (spec §2.8)."""

    text: NullSpec = field(default_factory=lambda: NullSpec(0.2))
    lyrics: NullSpec = field(default_factory=lambda: NullSpec(0.3))
    audio: NullSpec = field(default_factory=lambda: NullSpec(0.5))
    skip_null: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "NullEmbeddingConfig":
        out = cls()
        for key, value in _mapping("null_embedding", data or {}).items():
            if key == "skip_null":
                out.skip_null = _typed("null_embedding.skip_null", value, bool)
            elif key in ("text", "lyrics", "audio"):
                spec = getattr(out, key)
                unknown = set(_mapping(f"null_embedding.{key}", value)) - {"dropout", "length"}
                if unknown:
                    raise ConfigError(f"config field 'null_embedding.{key}': unknown keys {sorted(unknown)}")
                spec.dropout = _typed(f"null_embedding.{key}.dropout", value.get("dropout", spec.dropout), float)
                spec.length = _typed(f"null_embedding.{key}.length", value.get("length", spec.length), int)
                if not 0.0 <= spec.dropout <= 1.0:
                    raise ConfigError(f"config field 'null_embedding.{key}.dropout': {spec.dropout} is not in [0, 1]")
                if spec.length < 1:
                    raise ConfigError(f"config field 'null_embedding.{key}.length': must be >= 1, got {spec.length}")
            else:
                raise ConfigError(f"config field 'null_embedding': unknown key {key!r}")
        return out


@dataclass
class DownsamplerSpec:
    """One named downsampler configuration: a kind, a factor and kind-specific options."""

    kind: str = "none"
    factor: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> "DownsamplerSpec":
        data = dict(_mapping(f"downsample.configs.{name}", data))
        raw_kind = data.pop("kind", None)
        if raw_kind not in DOWNSAMPLER_KINDS:
            raise ConfigError(
                f"config field 'downsample.configs.{name}.kind': unknown downsampler kind {raw_kind!r}; "
                f"expected one of {sorted(DOWNSAMPLER_KINDS)}"
            )
        kind = DOWNSAMPLER_KINDS[raw_kind]
        factor = _typed(f"downsample.configs.{name}.factor", data.pop("factor", 1), int)
        if factor < 1:
            raise ConfigError(f"config field 'downsample.configs.{name}.factor': must be >= 1, got {factor}")
        data.pop("dim", None)  # injected from the model dim
        unknown = set(data) - DOWNSAMPLER_OPTIONS[kind]
        if unknown:
            raise ConfigError(
                f"config field 'downsample.configs.{name}': option(s) {sorted(unknown)} do not apply to kind "
                f"{raw_kind!r}; allowed: {sorted(DOWNSAMPLER_OPTIONS[kind]) or 'none'}"
            )
        spec = cls(kind=raw_kind, factor=factor, options=data)
        return spec

    @property
    def canonical_kind(self) -> str:
        return DOWNSAMPLER_KINDS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "factor": self.factor, **self.options}


@dataclass
class DownsampleConfig:
    """Which named downsampler each stream uses (spec §3.2 ``downsample``)."""

    eval: str = "none"
    ref: str | None = None  # None: a copy of eval's config (own weights)
    text: str = "none"      # also used for lyrics
    configs: dict[str, DownsamplerSpec] = field(default_factory=lambda: {"none": DownsamplerSpec()})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "DownsampleConfig":
        if not data:
            return cls()
        data = dict(_mapping("downsample", data))
        unknown = set(data) - {"eval", "ref", "text", "configs"}
        if unknown:
            raise ConfigError(f"config field 'downsample': unknown key(s) {sorted(unknown)}")
        raw_configs = _mapping("downsample.configs", data.get("configs") or {})
        configs = {name: DownsamplerSpec.from_dict(name, spec or {}) for name, spec in raw_configs.items()}
        if not configs:
            named = {s: data[s] for s in ("eval", "ref", "text") if data.get(s) not in (None, "none")}
            if named:
                warnings.warn(f"config 'downsample' names {named} but defines no 'configs': every downsampler "
                              f"is the identity, as the reference loader does")
            return cls()
        out = cls(eval=data.get("eval", "none"), ref=data.get("ref"), text=data.get("text", "none"), configs=configs)
        for stream in ("eval", "ref", "text"):
            name = getattr(out, stream)
            if name is not None and name not in configs:
                raise ConfigError(
                    f"config field 'downsample.{stream}': {name!r} is not defined under 'downsample.configs' "
                    f"(defined: {sorted(configs)})"
                )
        return out

    def spec_for(self, stream: str) -> DownsamplerSpec:
        """The spec of stream ``eval``, ``ref``, ``text`` or ``lyrics``."""
        if stream == "lyrics":
            stream = "text"
        if stream == "ref" and self.ref is None:
            stream = "eval"
        if stream not in ("eval", "ref", "text"):
            raise ConfigError(f"unknown downsampler stream {stream!r}")
        return self.configs[getattr(self, stream)]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eval": self.eval, "text": self.text}
        if self.ref is not None:
            out["ref"] = self.ref
        out["configs"] = {name: spec.to_dict() for name, spec in self.configs.items()}
        return out


@dataclass
class CMIRMConfig:
    """The CMI-RM architecture and training switches, with the released defaults (spec §3.2)."""

    name: str = "reward"
    model_name: str = "OpenMuQ/MuQ-MuLan-large"
    dim: int = 768
    mode: str = "concat_text_late"
    attention_mode: str = "SA"
    mlp_dim: int = 512
    output_dim: int = 2
    sr: int = 24000
    prompt_tf_depth: int = 1
    joint_tf_depth: int = 4
    dim_head: int = 64
    heads: int = 8
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    ff_mult: int = 4
    use_layer_idx: int = -1
    freeze_audio: bool = True
    freeze_text: bool = True
    train_muq_depth: int = 0
    text_encoder: Any = "muqmulan"
    text_lora_config: dict[str, Any] | None = None
    load_config: dict[str, Any] | None = None
    null_embedding: NullEmbeddingConfig = field(default_factory=NullEmbeddingConfig)
    category_embeddings: Any = None
    downsample: DownsampleConfig = field(default_factory=DownsampleConfig)
    #: Keys this version does not know, kept so that saving writes them back.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name != "reward":
            raise ConfigError(
                f"config field 'name': {self.name!r} is not supported; cmirm implements the CMI-RM reward "
                f"model ('reward') only"
            )
        _choice("mode", self.mode, MODES)
        _choice("attention_mode", self.attention_mode, ATTENTION_MODES)
        for key, kind in (("dim", int), ("mlp_dim", int), ("output_dim", int), ("sr", int), ("dim_head", int),
                          ("heads", int), ("ff_mult", int), ("prompt_tf_depth", int), ("joint_tf_depth", int),
                          ("train_muq_depth", int), ("use_layer_idx", int), ("attn_dropout", float),
                          ("ff_dropout", float), ("freeze_audio", bool), ("freeze_text", bool)):
            setattr(self, key, _typed(key, getattr(self, key), kind))
        for key in ("dim", "mlp_dim", "output_dim", "sr", "dim_head", "heads", "ff_mult"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"config field '{key}': must be a positive integer, got {getattr(self, key)!r}")
        for key in ("prompt_tf_depth", "joint_tf_depth", "train_muq_depth"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"config field '{key}': must be >= 0, got {getattr(self, key)!r}")
        if self.output_dim != 2:
            raise ConfigError(f"config field 'output_dim': CMI-RM scores two axes, got {self.output_dim}")
        encoder = self.text_encoder_options
        if encoder.get("name", "muqmulan") not in ("muqmulan", "muq_mulan"):
            raise ConfigError(
                f"config field 'text_encoder.name': {encoder.get('name')!r} is not supported; only the "
                f"MuQ-MuLan text tower ('muqmulan') is implemented"
            )
        if encoder.get("tune") not in (None, "transformer", "all"):
            raise ConfigError(f"config field 'text_encoder.tune': unknown value {encoder.get('tune')!r}; "
                              f"expected null, 'transformer' or 'all'")
        if self.load_config and self.load_config.get("checkpoint_path"):
            raise ConfigError(
                "config field 'load_config.checkpoint_path' points to a pickle checkpoint "
                f"({self.load_config['checkpoint_path']!r}); cmirm loads weights only from model.safetensors "
                "next to config.yaml. Remove the key (or set it to null)."
            )

    @property
    def text_encoder_options(self) -> dict[str, Any]:
        """``text_encoder`` as a dict (the schema allows a bare name string)."""
        if isinstance(self.text_encoder, str):
            return {"name": self.text_encoder}
        if isinstance(self.text_encoder, Mapping):
            return dict(self.text_encoder)
        raise ConfigError(f"config field 'text_encoder': expected a string or a mapping, got {self.text_encoder!r}")

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CMIRMConfig":
        """Build from a parsed YAML mapping (flat, or nested under ``model:``)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
        if "model" in data and isinstance(data["model"], Mapping):
            data = data["model"]
        data = dict(data)
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: data.pop(k) for k in list(data) if k not in known}
        if extra:
            warnings.warn(f"config: keeping unknown key(s) {sorted(extra)} unchanged (not used by cmirm)")
        data["null_embedding"] = NullEmbeddingConfig.from_dict(data.get("null_embedding"))
        data["downsample"] = DownsampleConfig.from_dict(data.get("downsample"))
        try:
            return cls(**data, extra=extra)
        except TypeError as exc:
            raise ConfigError(f"config: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: str | Path) -> "CMIRMConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"'{path}': config.yaml not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"'{path}': not valid YAML ({exc})") from exc
        try:
            return cls.from_dict(data or {})
        except ConfigError as exc:
            raise ConfigError(f"'{path}': {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)
               if f.name not in ("null_embedding", "downsample", "extra")}
        out["null_embedding"] = asdict(self.null_embedding)
        out["downsample"] = self.downsample.to_dict()
        out.update(copy.deepcopy(self.extra))
        return out

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path
