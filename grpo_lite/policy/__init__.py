"""The policy's loading: the base model in 4-bit NF4 with LoRA adapters (``model``), the transformers and
Unsloth backends (``backends``), compute dtypes and the GPU's abilities (``precision``), the memory
planner (``memory``), Hub-free real models from the package index (``offline``) and the tiny model the
tests and the CPU demo use (``tiny``). The engine loads through here; nothing here imports the engine."""
