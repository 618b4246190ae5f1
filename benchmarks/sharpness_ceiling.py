"""How sharp can the NeRF that NGD finetunes get when its targets are perfect?

NGD finetunes the bundle's NeRF (its triplane and MLP, from the feed-forward triplane of the input
view) toward the CDM's targets. Its sharpness ratio on held-out views is bounded twice: by how sharp
those targets are (the CDM) and by how sharp this NeRF can render at all (the triplane, its
samples per ray, the resolution). This separates the two. Per validation object it runs NGD's
optimisation (same parameters, Adam learning rates, rays per iteration and iteration count) with
the ground truth as the targets instead of the CDM's, in two settings:

* ``held-out``: fit the input view and every other view except the 8 evaluation targets (what NGD
  would reach with a perfect CDM at real cameras);
* ``seen``: fit every view, the evaluation targets included (pure capacity: the representation's
  ceiling).

and scores the 8 evaluation targets (the same ones ``nerfdiff-eval --max-eval-views 8`` uses) with
PSNR, SSIM and the sharpness ratio, beside the feed-forward render.

    python benchmarks/sharpness_ceiling.py --bundle nerfdiff_ns/assets/bundle-chairs --data data/chairs32/val --num-objects 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _common import machine_facts, print_table, val_objects, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("nerfdiff_ns/assets/bundle-chairs"), help="pretrained bundle folder")
    parser.add_argument("--data", type=Path, default=Path("data/chairs32/val"), help="SRN split folder with protocol.json")
    parser.add_argument("--num-objects", type=int, default=5, help="first N objects of the split")
    parser.add_argument("--iterations", type=int, default=250, help="optimisation steps (nerfdiff-tiny's NGD runs 250)")
    parser.add_argument("--rays", type=int, default=1024, help="rays per step, drawn over the fitted views (nerfdiff-tiny: 1024)")
    parser.add_argument("--lr-triplane", type=float, default=2e-3, help="Adam rate of the triplane (nerfdiff-tiny's)")
    parser.add_argument("--lr-field", type=float, default=2e-4, help="Adam rate of the MLP (nerfdiff-tiny's)")
    parser.add_argument("--max-eval-views", type=int, default=8, help="evaluation targets per object")
    parser.add_argument("--seed", type=int, default=0, help="seed of the ray draws and the ray jitter")
    parser.add_argument("--output-json", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    from nerfdiff_ns.bundle import load_bundle
    from nerfdiff_ns.data.multiview import load_object_folder
    from nerfdiff_ns.metrics import psnr, sharpness_ratio, ssim
    from nerfdiff_ns.nerf.image_nerf import SourceView
    from nerfdiff_ns.nerf.rays import camera_rays, image_pixels

    torch.manual_seed(args.seed)
    bundle = load_bundle(args.bundle)
    input_view, folders = val_objects(args.data, args.num_objects)
    scores: dict[str, list[torch.Tensor]] = {}

    def score(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """[V, H, W, 3] pairs -> [V, 3]: PSNR, SSIM, sharpness ratio."""
        return torch.stack([psnr(pred, gt), ssim(pred, gt), sharpness_ratio(pred, gt)], -1)

    for folder in folders:
        obj = load_object_folder(folder)
        imgs, c2w, k = obj.images, obj.c2w, obj.intrinsics[None]
        h, w = imgs.shape[1:3]
        source = SourceView(c2w[input_view : input_view + 1], k, (h, w))
        targets = obj.eval_view_indices(input_view, args.max_eval_views)
        nerf = bundle.load_nerf("cpu").eval()
        with torch.no_grad():
            initial = nerf.encode(imgs[input_view : input_view + 1])
        render = nerf.render_image(initial, source, c2w[targets], k.expand(len(targets), 4), h, w)["rgb"]
        scores.setdefault("feed-forward", []).append(score(render, imgs[targets]))
        for setting, views in (("held-out", [i for i in range(imgs.shape[0]) if i not in targets]), ("seen", list(range(imgs.shape[0])))):
            nerf = bundle.load_nerf("cpu")
            nerf.encoder.requires_grad_(False)
            triplane = torch.nn.Parameter(initial.clone())
            optimizer = torch.optim.Adam([{"params": [triplane], "lr": args.lr_triplane},
                                          {"params": list(nerf.field.parameters()), "lr": args.lr_field}], eps=1e-15)
            pixels = image_pixels(h, w, "cpu")[None].expand(len(views), -1, -1)
            origins, dirs = camera_rays(c2w[views], k.expand(len(views), 4), pixels)
            origins, dirs, colours = origins.reshape(-1, 3), dirs.reshape(-1, 3), imgs[views].reshape(-1, 3)
            gen = torch.Generator().manual_seed(args.seed)
            nerf.train()
            for _ in range(args.iterations):
                pick = torch.randint(len(colours), (args.rays,), generator=gen)
                out = nerf.render_rays(triplane, source, origins[pick][None], dirs[pick][None], jitter=True)
                loss = (out["rgb"][0] - colours[pick]).pow(2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            nerf.eval()
            fitted = nerf.render_image(triplane.detach(), source, c2w[targets], k.expand(len(targets), 4), h, w)["rgb"]
            scores.setdefault(f"GT-fit, {setting}", []).append(score(fitted.clamp(0, 1), imgs[targets]))
        print(f"{folder.name}: " + ", ".join(f"{key} {v[-1][:, 2].mean():.3f}" for key, v in scores.items()), flush=True)

    table = {key: torch.cat(v).nanmean(0).tolist() for key, v in scores.items()}
    print(f"bundle {args.bundle}, {len(folders)} objects of {args.data}, input view {input_view}, "
          f"{args.iterations} iterations x {args.rays} rays")
    print_table("NeRF fitted to ground-truth targets, scored on the evaluation targets", ["NeRF", "PSNR", "SSIM", "sharpness"],
                [[key, f"{v[0]:.2f}", f"{v[1]:.4f}", f"{v[2]:.3f}"] for key, v in table.items()])
    if args.output_json:
        write_json(args.output_json, {"machine": machine_facts("cpu"), "bundle": str(args.bundle), "objects": len(folders),
                                      "scores": table, "args": {key: str(v) for key, v in vars(args).items()}})


if __name__ == "__main__":
    main()
