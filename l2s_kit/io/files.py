"""The file names of a Hugging Face checkpoint folder that the kit reads and writes (no torch
needed to know them)."""

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Files that hold a tokenizer's vocabulary: a folder without any of them cannot generate text.
VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model")
# Files copied from the tokenizer source model when present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)
GENERATION_CONFIG = "generation_config.json"
