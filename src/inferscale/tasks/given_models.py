"""Where a stage finds the weights of a policy or PRM: a trained one in its stage's artifact, a
given one in its local folder or, for a hub id, in the Hugging Face cache (downloaded there
first where it is not yet)."""

from __future__ import annotations

from inferscale.config import ExperimentConfig, PolicyConfig
from inferscale.models.checkpoints import local_checkpoint


def policy_dir(policy: PolicyConfig, model: str) -> str:
    """The folder of `policy`'s weights; `model` is its SFT artifact or its checkpoint."""
    if policy.checkpoint is None:
        return model
    return local_checkpoint(policy.checkpoint, policy.revision)


def prm_dir(config: ExperimentConfig, prm: str) -> str:
    """The folder of the PRM's weights; `prm` is its training's artifact or its checkpoint (for
    an oracle, the model of the policy whose architecture its reads cost as)."""
    assert config.prm is not None
    if config.prm.is_oracle:
        return policy_dir(config.prm_init_policy, prm)
    if not config.prm.given:
        return prm
    return local_checkpoint(config.prm.checkpoint, config.prm.revision)
