"""PSNR of the frozen NeRF's cached renders against their targets, blobs as stored vs turned copies.

    python benchmarks/results/ngd-turned-copies-2026-12-07/render_gap.py runs/h200-rot/render_cache.safetensors data/synth32rot

Reads every 7th cached triple (object, target view, render) of a `nerfdiff-pretrain --render-cache-pairs` cache."""
import sys

import numpy as np
from PIL import Image
from safetensors.torch import load_file

from nerfdiff_ns.data.srn import list_srn_objects

cache, root = load_file(sys.argv[1]), sys.argv[2]
objects = list_srn_objects(root, "train")
scores: dict = {"as stored": [], "turned": []}
for i in range(0, len(cache["object_index"]), 7):
    obj = objects[int(cache["object_index"][i])]
    target = np.asarray(Image.open(obj / "rgb" / f"{int(cache['target_view'][i]):06d}.png").convert("RGB"), np.float32) / 255
    render = cache["renders"][i].numpy()  # [0, 1], as the NeRF renders
    scores["turned" if "r" in obj.name else "as stored"].append(-10 * np.log10(((render - target) ** 2).mean()))
for kind, values in scores.items():
    print(f"{kind}: {len(values)} renders, mean PSNR {np.mean(values):.2f} dB")
