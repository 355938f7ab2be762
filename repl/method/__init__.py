"""RepL: the method (plan, fusion, surrogates, bake) and the model families it knows."""
from repl.method import transformers  # noqa: F401  (registers the ViT and GPT families)
