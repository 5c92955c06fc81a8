"""The GPT4RoI model as a transformers model, registered with the Auto classes on import.

Public API (used by training, evaluation and chat):
- :func:`build_model` (``cfg`` from ``conf/architecture``) -> ``(model, processor)``;
- ``processor(rows)`` / ``processor(rows, generation=True)`` -> a model batch;
- :func:`generate_for_rows`, :func:`loglikelihood` for the evaluators' protocol;
- :func:`save_pretrained` / :func:`load_pretrained` for a model and its processor together.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_gpt4roi import GPT4RoIConfig
from .factory import build_model, load_pretrained, save_pretrained
from .inference import generate_for_rows, loglikelihood
from .modeling_gpt4roi import FREEZE_GROUPS, GPT4RoIForCausalLM

AutoConfig.register(GPT4RoIConfig.model_type, GPT4RoIConfig, exist_ok=True)
AutoModelForCausalLM.register(GPT4RoIConfig, GPT4RoIForCausalLM, exist_ok=True)

__all__ = [
    "FREEZE_GROUPS",
    "GPT4RoIConfig",
    "GPT4RoIForCausalLM",
    "build_model",
    "generate_for_rows",
    "load_pretrained",
    "loglikelihood",
    "save_pretrained",
]
