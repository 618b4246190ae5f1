"""How opaque is the feed-forward NeRF on the object, and how clear is it on the background?

The NeRF is pretrained and finetuned with an RGB loss only. Against a uniform background colour that
loss cannot tell an empty ray from a ray through background-coloured fog, nor an opaque object from a
half-transparent one showing the background through it. This measures what the bundle's NeRF does: per
validation object, its accumulated opacity (the compositing weights' sum per ray) at the input view and
at the 8 evaluation targets, averaged over the ground truth's object pixels (ideal: 1) and background
pixels (ideal: 0). The motivation of ``--pipeline.model.mask-loss-weight`` (README).

    python benchmarks/opacity.py --bundle nerfdiff_ns/assets/bundle-tiny --data data/synth32/val --num-objects 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _common import val_objects  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("nerfdiff_ns/assets/bundle-chairs"), help="pretrained bundle folder")
    parser.add_argument("--data", type=Path, default=Path("data/chairs32/val"), help="SRN split folder with protocol.json")
    parser.add_argument("--num-objects", type=int, default=8, help="first N objects of the split")
    parser.add_argument("--max-eval-views", type=int, default=8, help="evaluation targets per object")
    args = parser.parse_args()

    from nerfdiff_ns.bundle import load_bundle
    from nerfdiff_ns.data.multiview import load_object_folder
    from nerfdiff_ns.evaluation.scoring import object_pixels, split_opacity
    from nerfdiff_ns.nerf.image_nerf import SourceView

    bundle = load_bundle(args.bundle)
    nerf = bundle.load_nerf("cpu").eval()
    background = torch.tensor(bundle.config.nerf.background)
    input_view, folders = val_objects(args.data, args.num_objects)
    rows = []
    for folder in folders:
        obj = load_object_folder(folder)
        imgs, c2w, k = obj.images, obj.c2w, obj.intrinsics[None]
        h, w = imgs.shape[1:3]
        views = [input_view] + list(obj.eval_view_indices(input_view, args.max_eval_views))
        with torch.no_grad():
            triplane = nerf.encode(imgs[input_view : input_view + 1])
            source = SourceView(c2w[input_view : input_view + 1], k, (h, w))
            acc = nerf.render_image(triplane, source, c2w[views], k.expand(len(views), 4), h, w)["accumulation"]
        on_object = object_pixels(imgs[views], background)
        at_input, at_targets = split_opacity(acc[:1], on_object[:1]), split_opacity(acc[1:], on_object[1:])
        rows.append([at_input["object"], at_input["background"], at_targets["object"], at_targets["background"]])
        print(f"{folder.name}: input view object {rows[-1][0]:.3f} background {rows[-1][1]:.3f}; "
              f"targets object {rows[-1][2]:.3f} background {rows[-1][3]:.3f}")
    mean = torch.tensor(rows).mean(0)
    print(f"mean over {len(rows)} objects (bundle {args.bundle}, input view {input_view}): accumulated opacity on the "
          f"input view's object {mean[0]:.3f} / background {mean[1]:.3f}; on the targets' object {mean[2]:.3f} / background {mean[3]:.3f}")


if __name__ == "__main__":
    main()
