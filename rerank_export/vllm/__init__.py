"""vLLM as the serving engine: the command for an artifact (command.py), its CPU thread binding
(binding.py), the server process it runs in (server.py), the parity gate's scoring through it (engine.py),
and the decisions `serve --engine vllm` makes before starting it (decide.py)."""
