"""The MuQ audio encoder (mel front end, conv subsampling, conformer), built from its hub config.

Implemented from the spec (§2.2.1) with torchaudio's DSP functions and transformers'
`Wav2Vec2ConformerEncoder`; module names follow the MuQ checkpoint so its weights load as they
are. Output: the conformer's ``last_hidden_state`` (after its final LayerNorm) at 25 frames/s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torchaudio.functional as AF
from torch import nn
from transformers import Wav2Vec2ConformerConfig
from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

from cmirm_plugin.errors import ConfigError

SAMPLE_RATE = 24000
N_FFT = 2048
#: Shortest waveform the front end accepts: reflect padding needs more than n_fft/2 samples.
MIN_SAMPLES = N_FFT // 2 + 1


@dataclass
class MuQConfig:
    """The fields of a MuQ hub ``config.json`` that shape the encoder."""

    conv_dim: int = 512
    encoder_dim: int = 1024
    encoder_depth: int = 12
    n_mels: int = 128
    hop_length: int = 240
    label_rate: int = 25
    codebook_dim: int = 16
    codebook_size: int = 4096
    num_codebooks: int = 1
    features: list[str] = field(default_factory=lambda: ["melspec_2048"])
    stat: dict[str, float] = field(default_factory=lambda: {
        "melspec_2048_mean": 6.768444971712967, "melspec_2048_std": 18.417922652295623})
    w2v2_config: dict[str, Any] = field(default_factory=lambda: {
        "hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 16, "intermediate_size": 4096,
        "conv_depthwise_kernel_size": 31, "position_embeddings_type": "rotary", "rotary_embedding_base": 10000,
        "hidden_act": "swish", "layer_norm_eps": 1e-5, "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16, "do_stable_layer_norm": True, "max_source_positions": 5000,
    })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MuQConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        cfg = cls(**known)
        if cfg.features != ["melspec_2048"]:
            raise ConfigError(f"MuQ config 'features': only ['melspec_2048'] is supported, got {cfg.features}")
        for key in ("melspec_2048_mean", "melspec_2048_std"):
            if key not in cfg.stat:
                raise ConfigError(f"MuQ config 'stat' lacks '{key}'")
        return cfg

    def conformer_config(self) -> Wav2Vec2ConformerConfig:
        """The conformer config: ``w2v2_config`` with MuQ's own width and depth (they win)."""
        kwargs = {k: v for k, v in self.w2v2_config.items() if k not in ("architectures", "transformers_version")}
        # LayerDrop (transformers' default 0.1) would skip random layers of a partly unfrozen MuQ.
        kwargs.update(num_hidden_layers=self.encoder_depth, hidden_size=self.encoder_dim, layerdrop=0.0)
        config = Wav2Vec2ConformerConfig(**kwargs)
        config._attn_implementation = "sdpa"   # same math as eager here (no position bias with rotary), faster
        return config


class MelFrontEnd(nn.Module):
    """Power mel spectrogram in dB, last frame dropped, normalised with the MuQ statistics.

    Equals torchaudio ``MelSpectrogram(24000, n_fft=2048, hop_length=240, n_mels)`` followed by
    ``AmplitudeToDB()``; always computed in fp32 (also under autocast). Buffers are not persistent:
    they are derived from the config, not weights.
    """

    def __init__(self, n_mels: int, hop_length: int, mean: float, std: float) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.mean, self.std = float(mean), float(std)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        with torch.device("cpu"):  # melscale_fbanks inspects values, so not on the meta device
            fb = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE, norm=None,
                                    mel_scale="htk")
        self.register_buffer("fb", fb, persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` -> ``[B, n_mels, floor(L / hop)]``."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = AF.spectrogram(wave.float(), pad=0, window=self.window, n_fft=N_FFT, hop_length=self.hop_length,
                                  win_length=N_FFT, power=2.0, normalized=False, center=True, pad_mode="reflect",
                                  onesided=True)
            mel = torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)
            db = AF.amplitude_to_DB(mel, multiplier=10.0, amin=1e-10, db_multiplier=0.0, top_db=None)
            return (db[..., :-1] - self.mean) / self.std


class Res2dModule(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a strided conv3x3-BN shortcut, then ReLU."""

    def __init__(self, idim: int, odim: int, stride: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(odim)
        self.conv2 = nn.Conv2d(odim, odim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(odim)
        self.conv3 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn3 = nn.BatchNorm2d(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.bn3(self.conv3(x)))


class Conv2dSubsampling(nn.Module):
    """Two stride-(2,2) residual conv modules (x4 in time and frequency) and a linear projection.

    The convolutions run in ``channels_last`` memory format (weights are created in it, and
    loading or moving the module keeps it): the same math, ~1.4x faster 512-channel 3x3 convs
    on CPU (see benchmarks/score_throughput.py), scores within float32 rounding of NCHW.
    """

    def __init__(self, conv_dim: int, out_dim: int, n_mels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(Res2dModule(1, conv_dim), Res2dModule(conv_dim, conv_dim))
        self.linear = nn.Linear(conv_dim * n_mels // 4, out_dim)
        self.set_memory_format(torch.channels_last)

    def set_memory_format(self, memory_format: torch.memory_format) -> None:
        """Run the convolutions in ``memory_format`` (weights converted now, inputs on every call)."""
        self.memory_format = memory_format
        self.conv.to(memory_format=memory_format)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, n_mels, F]`` -> ``[B, ceil(ceil(F/2)/2), out_dim]``."""
        x = self.conv(mel.unsqueeze(1).contiguous(memory_format=self.memory_format))   # [B, C, n_mels/4, T]
        b, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * f)   # b c f t -> b t (c f)
        return self.linear(x)


class RandomProjectionQuantizer(nn.Module):
    """MuQ's pre-training target quantizer. Unused for encoding; kept so the checkpoint loads fully."""

    def __init__(self, input_dim: int, codebook_dim: int, codebook_size: int) -> None:
        super().__init__()
        self.register_buffer("random_projection", torch.zeros(input_dim, codebook_dim))
        self.register_buffer("codebook", torch.zeros(codebook_size, codebook_dim))


class MuQModel(nn.Module):
    """Mel front end -> conv subsampling -> conformer (state-dict prefix ``model.``)."""

    def __init__(self, config: MuQConfig) -> None:
        super().__init__()
        self.config = config
        self.frontend = MelFrontEnd(config.n_mels, config.hop_length, config.stat["melspec_2048_mean"],
                                    config.stat["melspec_2048_std"])
        stack = SAMPLE_RATE // config.hop_length // config.label_rate   # mel frames per token (4)
        self.quantizer_melspec_2048 = RandomProjectionQuantizer(config.n_mels * stack, config.codebook_dim,
                                                                config.codebook_size)
        self.conv = Conv2dSubsampling(config.conv_dim, config.encoder_dim, config.n_mels)
        self.conformer = Wav2Vec2ConformerEncoder(config.conformer_config())
        self.linear = nn.Linear(config.encoder_dim, config.codebook_size * config.num_codebooks)  # pre-training head
        self.cls_token = nn.Parameter(torch.zeros(config.encoder_dim))                        # unused at inference

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` 24 kHz waveforms of equal length -> ``[B, T, encoder_dim]``, T = ceil(ceil(floor(L/hop)/2)/2)."""
        x = self.conv(self.frontend(wave))
        return self.conformer(x).last_hidden_state


class MuQ(nn.Module):
    """The hub-level MuQ wrapper (its checkpoint keys start with ``model.``)."""

    def __init__(self, config: MuQConfig) -> None:
        super().__init__()
        self.model = MuQModel(config)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.model(wave)
