"""The apps that drive the engine: the command line (``cli``), the offline demo (``demo``), the tool
demo (``tool_demo``), GSM8K's loading (``gsm8k``) and the hand-over to TRL on accelerate
(``scale_out``). The engine never imports an app (``lint-imports``)."""
