"""Local checkpoints: directories of config.json and safetensors, GGUF files, loading onto devices, and the checks of
their files against the model."""
