"""The CMI-RM reward model: config, frozen MuQ-MuLan towers, MuLan blocks, downsamplers, heads."""

from cmirm_plugin.model.config import CMIRMConfig, DownsampleConfig, DownsamplerSpec, NullEmbeddingConfig
from cmirm_plugin.model.reward_model import CMIRewardModel

__all__ = ["CMIRMConfig", "CMIRewardModel", "DownsampleConfig", "DownsamplerSpec", "NullEmbeddingConfig"]
