"""Qwen2.5-Math-PRM's model without its remote code: the Qwen2 backbone from transformers and
the reward head, Linear(H, H) -> ReLU -> Linear(H, 2), applied at every position (no lm_head).

The class and weight names are the checkpoint's own (`Qwen2ForProcessRewardModel`, `model.*`
for the backbone, `score.0.*` and `score.2.*` for the head, as in the upstream
`modeling_qwen2_rm.py` and vLLM's `qwen2_rm.py`), so the published weights load as they are
and a checkpoint written here has the upstream layout.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput

ARCHITECTURE = "Qwen2ForProcessRewardModel"
HEAD_WEIGHTS = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")
CLASSES = 2  # head outputs: (step wrong, step right)


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    def __init__(self, config: Qwen2Config) -> None:
        super().__init__(config)
        self.model = Qwen2Model(config)
        hidden = config.hidden_size
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        hidden = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kwargs,
        ).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden))


def load_qwen_prm(checkpoint: str, revision: str | None, **options) -> Qwen2ForProcessRewardModel:
    """The model with every weight from the checkpoint; a missing head weight is an error, never
    a random initialisation."""
    model, info = Qwen2ForProcessRewardModel.from_pretrained(
        checkpoint, revision=revision, output_loading_info=True, **options
    )
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ValueError(
            f"{checkpoint} lacks weights of a Qwen2.5-Math-PRM ({', '.join(missing[:4])}); use "
            "a checkpoint with the reward head (score.0.*, score.2.*) or another prm.format"
        )
    return model
