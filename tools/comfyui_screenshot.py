"""The ComfyUI page's screenshot and example workflow, from a real ComfyUI in a headless browser.

Builds a workflow with our nodes in ComfyUI's own frontend (a checkpoint loader and prompts
feeding the DPM-Solver Tune Sampler into SamplerCustom, a KSampler on dpmsolver_ipndm_afs
with the dpmsolver_time_quadratic scheduler, and the DPM-Solver and DPM-Solver Sigmas
nodes), saves it as ComfyUI serializes it, and takes a screenshot.

Needs: a ComfyUI checkout with its requirements (comfyui-frontend-package included) in the
Python that runs it, dpmsolver installed there, a ComfyUI started with our node folder
(`dpmsolver comfyui install COMFYUI_BASE`) and an empty checkpoint file named as below in
its models/checkpoints/ (the loader lists file names only), Playwright (`pip install
playwright`) and a Chromium (Debian's `chromium`):

    python main.py --cpu --listen 127.0.0.1 --port 8190 --base-directory COMFYUI_BASE
    python tools/comfyui_screenshot.py --url http://127.0.0.1:8190 \\
        --png docs/images/comfyui_workflow.png --workflow examples/comfyui_workflow.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"

# Runs in the page: the graph built through LiteGraph (ComfyUI's canvas), then serialized.
BUILD = """
() => {
  const app = window.app, LG = window.LiteGraph;
  app.graph.clear();
  const add = (type, x, y, values) => {
    const n = LG.createNode(type);
    n.pos = [x, y + 50];
    app.graph.add(n);
    for (const [k, v] of Object.entries(values || {})) {
      const w = n.widgets.find(w => w.name === k);
      if (!w) throw new Error(type + " has no widget " + k);
      w.value = v;
    }
    return n;
  };
  const out = (n, name) => n.outputs.findIndex(o => o.name === name || o.type === name);
  const inp = (n, name) => n.inputs.findIndex(i => i.name === name);
  const link = (a, aname, b, bname) => a.connect(out(a, aname), b, inp(b, bname));
  const ckpt = add("CheckpointLoaderSimple", 20, 60, {ckpt_name: "CHECKPOINT"});
  const pos = add("CLIPTextEncode", 360, 20, {text: "a watercolour fox in the snow"});
  const neg = add("CLIPTextEncode", 360, 250, {text: "blurry"});
  const lat = add("EmptyLatentImage", 20, 330, {width: 512, height: 512, batch_size: 1});
  link(ckpt, "CLIP", pos, "clip"); link(ckpt, "CLIP", neg, "clip");
  const tune = add("DPMSolverTuneSampler", 760, 20,
                   {cfg: 7.0, steps: 8, pilots: 16, pilot_seed: 0});
  link(ckpt, "MODEL", tune, "model"); link(pos, "CONDITIONING", tune, "positive");
  link(neg, "CONDITIONING", tune, "negative"); link(lat, "LATENT", tune, "latent_image");
  const custom = add("SamplerCustom", 1100, 20, {cfg: 7.0});
  link(ckpt, "MODEL", custom, "model"); link(pos, "CONDITIONING", custom, "positive");
  link(neg, "CONDITIONING", custom, "negative"); link(tune, "SAMPLER", custom, "sampler");
  link(tune, "SIGMAS", custom, "sigmas"); link(lat, "LATENT", custom, "latent_image");
  const dec = add("VAEDecode", 1420, 20);
  link(custom, "output", dec, "samples"); link(ckpt, "VAE", dec, "vae");
  const save = add("SaveImage", 1420, 130, {filename_prefix: "dpmsolver_tuned"});
  link(dec, "IMAGE", save, "images");
  const ks = add("KSampler", 760, 330, {steps: 10, cfg: 7.0,
    sampler_name: "dpmsolver_ipndm_afs", scheduler: "dpmsolver_time_quadratic"});
  link(ckpt, "MODEL", ks, "model"); link(pos, "CONDITIONING", ks, "positive");
  link(neg, "CONDITIONING", ks, "negative"); link(lat, "LATENT", ks, "latent_image");
  const dec2 = add("VAEDecode", 1100, 330);
  link(ks, "LATENT", dec2, "samples"); link(ckpt, "VAE", dec2, "vae");
  const save2 = add("SaveImage", 1100, 440, {filename_prefix: "dpmsolver_ksampler"});
  link(dec2, "IMAGE", save2, "images");
  add("DPMSolverSampler", 20, 560,
      {algorithm: "dpmsolver++", order: 3, corrector: "all", analytic_first_step: true});
  const sig = add("DPMSolverSigmas", 360, 560, {grid: "time_quadratic", steps: 9});
  link(ckpt, "MODEL", sig, "model");
  app.graph.setDirtyCanvas(true, true);
  return JSON.stringify(app.graph.serialize());
}
""".replace("CHECKPOINT", CHECKPOINT)

# The node types the page waits for: ComfyUI's frontend registers them after loading.
READY = (
    "() => window.LiteGraph && window.app && window.app.graph && "
    "'DPMSolverTuneSampler' in window.LiteGraph.registered_node_types && "
    "'CheckpointLoaderSimple' in window.LiteGraph.registered_node_types"
)
# As the machines' notes start Chromium headless: no background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8190")
    parser.add_argument("--png", type=Path, default=Path("docs/images/comfyui_workflow.png"))
    parser.add_argument("--workflow", type=Path, default=Path("examples/comfyui_workflow.json"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1800, "height": 1000})
        page.goto(args.url, wait_until="networkidle")
        page.wait_for_function(READY, timeout=60_000)
        page.wait_for_timeout(3000)  # the frontend's own start-up dialogs, then close them
        page.keyboard.press("Escape")
        workflow = json.loads(page.evaluate(BUILD))
        args.workflow.write_text(json.dumps(workflow, indent=1) + "\n")
        page.wait_for_timeout(1500)  # the canvas redraws
        page.screenshot(path=str(args.png))
        browser.close()
    print(f"wrote {args.png} and {args.workflow}")


if __name__ == "__main__":
    main()
