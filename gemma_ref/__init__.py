"""gemma_ref: a small, readable, pure-NumPy reference for Google's Gemma models (1, 2 and 3 text).

    >>> from gemma_ref import load_model
    >>> model = load_model("path/to/model")          # config.json + safetensors
    >>> logits = model.forward([2, 651, 6037])       # float32 [3, vocab_size]

Imports only numpy, safetensors, sentencepiece and ml_dtypes.
"""

from gemma_ref.config import GemmaConfig, load_config
from gemma_ref.errors import InputError
from gemma_ref.model import Model, load_model

__all__ = ["GemmaConfig", "InputError", "Model", "Tokenizer", "load_config", "load_model"]


def __getattr__(name: str):
    # The tokenizer pulls in sentencepiece; import it only when asked for.
    if name == "Tokenizer":
        from gemma_ref.tokenizer import Tokenizer

        return Tokenizer
    raise AttributeError(f"module 'gemma_ref' has no attribute {name!r}")
