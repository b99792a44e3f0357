"""A stand-in for ComfyUI's `comfy` package: only the surface dpmsolver.comfyui uses (the
sampler and scheduler registry of comfy/samplers.py, KSAMPLER's sampling call, the model
sampling classes), re-derived from ComfyUI's source, for CI where ComfyUI is not installed
(it is not on the package index). tests/test_comfyui.py runs against the real ComfyUI when
COMFYUI_DIR names a checkout."""
