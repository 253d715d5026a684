"""AWQ 4-bit quantisation in plain PyTorch, written in the AutoAWQ GEMM layout vLLM loads.

pack.py     quantise a weight, pack/unpack the GEMM layout
settings.py the search's settings (torch-free: option parsing reads them)
search.py   the activation-aware scale and clip search; returns plain data (AWQResult)
cache.py    the search results, keyed by source weights, settings and calibration; shared with onnx-int4
apply.py    fold the searched scales/clips into a model and swap its decoder linears for 4-bit ones
qlinear.py  the runtime 4-bit linear (dequantises per layer on the fly)
"""
