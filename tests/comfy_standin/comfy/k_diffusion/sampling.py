"""Where ComfyUI's ksampler(name) finds `sample_<name>` (empty here: ours are added)."""
