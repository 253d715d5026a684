"""AWQ 4-bit quantisation in plain PyTorch, written in the AutoAWQ GEMM layout vLLM loads.

pack.py     quantise a weight, pack/unpack the GEMM layout
search.py   the activation-aware scale and clip search; returns plain data (AWQResult)
apply.py    fold the searched scales/clips into a model and swap its decoder linears for 4-bit ones
qlinear.py  the runtime 4-bit linear (dequantises per layer on the fly)
"""
