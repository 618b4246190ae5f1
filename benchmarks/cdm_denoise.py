"""Does the CDM add information beyond the NeRF render it is conditioned on?

NGD can only beat the feed-forward NeRF if the CDM's one-step estimate ``x0^`` of a target view is
closer to the truth than the NeRF's own render ``R`` of that view. This measures it directly on
validation objects (input view from ``protocol.json``, every other view a target), per timestep t:

* ``sdedit``:  z = alpha_t R + sigma_t eps   (what NGD feeds the CDM: a re-noised NeRF estimate)
* ``oracle``:  z = alpha_t GT + sigma_t eps  (the training distribution: an upper bound)

and prints PSNR(x0^, GT) beside PSNR(R, GT). ``sdedit`` above ``render`` at some t means the CDM
can pull the NeRF toward the truth there; the gain is what NGD distils.

``--average K`` adds, per t, the mean of K one-step estimates from independent noise (rows ``sdedit t=..., mean
of K=...``: a lower-variance estimate of the CDM's posterior mean); ``--repeat N`` feeds that estimate back in place
of the render N - 1 more times, re-noised at the same t (``..., round r``: does a second correction add more?).

``--trajectory GAMMA ...`` also runs NGD's whole guided reverse trajectory per target view with the
render R held fixed (NGD with a NeRF that never moves: what the first virtual targets look like)
and scores its final targets with PSNR, SSIM and the sharpness ratio beside R's own.
``--low-t-bundle B --switch-t S ...`` adds trajectories that hand the steps below t = S to B's CDM
(a CDM that corrects the render at high noise, another that draws detail at low noise).

    python benchmarks/cdm_denoise.py --bundle nerfdiff_ns/assets/bundle-tiny --data data/synth32/val --num-objects 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _common import machine_facts, print_table, resolve_device, val_objects, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("nerfdiff_ns/assets/bundle-tiny"), help="pretrained bundle folder")
    parser.add_argument("--data", type=Path, default=Path("data/synth32/val"), help="SRN split folder with protocol.json")
    parser.add_argument("--num-objects", type=int, default=10, help="first N objects of the split")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 100, 200, 300, 400, 500, 600, 800], help="integer timesteps to probe")
    parser.add_argument("--raw", action="store_true", help="use the raw CDM weights instead of the EMA")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--average", type=int, default=1, help="also score the mean of K one-step estimates per t (K > 1)")
    parser.add_argument("--repeat", type=int, default=1, help="with --average: re-noise and correct the averaged estimate N rounds in all")
    parser.add_argument("--trajectory", type=float, nargs="*", default=[], help="guidance gammas of fixed-render NGD trajectories to score")
    parser.add_argument("--steps", type=int, default=25, help="diffusion steps K of each trajectory")
    parser.add_argument("--t-max", type=float, default=0.98, help="trajectory start (fraction of T-1)")
    parser.add_argument("--t-min", type=float, default=0.02, help="trajectory end (fraction of T-1)")
    parser.add_argument("--low-t-bundle", type=Path, default=None,
                        help="a second bundle whose CDM runs the trajectory steps below each --switch-t (same NeRF renders)")
    parser.add_argument("--switch-t", type=int, nargs="*", default=[],
                        help="with --low-t-bundle: trajectories where --bundle's CDM runs t >= S and the other one t < S")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = CUDA when available")
    parser.add_argument("--output-json", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.average < 1 or args.repeat < 1:
        parser.error("--average and --repeat take a count of at least 1")
    if bool(args.low_t_bundle) != bool(args.switch_t) or (args.switch_t and not args.trajectory):
        parser.error("--low-t-bundle and --switch-t go together, with --trajectory GAMMA")

    from nerfdiff_ns.bundle import load_bundle
    from nerfdiff_ns.cdm.conditions import cdm_condition_kinds, render_condition_views
    from nerfdiff_ns.cdm.guidance import NGDTrajectories
    from nerfdiff_ns.cdm.schedule import alpha_sigma, ngd_timesteps, x0_from_prediction
    from nerfdiff_ns.cdm.unet import from_diffusion_range, relative_camera, to_diffusion_range
    from nerfdiff_ns.data.multiview import load_object_folder
    from nerfdiff_ns.metrics import psnr, sharpness_ratio, ssim
    from nerfdiff_ns.nerf.image_nerf import SourceView

    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    bundle = load_bundle(args.bundle)
    nerf = bundle.load_nerf(device).eval()
    cdm = bundle.load_cdm(device, ema=not args.raw)
    low_cdm = load_bundle(args.low_t_bundle).load_cdm(device, ema=not args.raw) if args.low_t_bundle else None
    if low_cdm is not None and cdm_condition_kinds(low_cdm) != cdm_condition_kinds(cdm):
        parser.error(f"--low-t-bundle's CDM expects the conditions {cdm_condition_kinds(low_cdm)}, --bundle's "
                     f"{cdm_condition_kinds(cdm)}: both CDMs read the same NeRF renders")
    scheduler = bundle.load_train_scheduler()
    input_view, folders = val_objects(args.data, args.num_objects)
    gen = torch.Generator().manual_seed(args.seed)
    timesteps = ngd_timesteps(args.steps, args.t_max, args.t_min, scheduler.config.num_train_timesteps)
    scores: dict[str, list[torch.Tensor]] = {}

    def hwc(images: torch.Tensor) -> torch.Tensor:
        """[V, 3, H, W] (the CDM's layout) -> [V, H, W, 3] (what nerfdiff_ns.metrics takes)."""
        return images.permute(0, 2, 3, 1)

    def score(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """[V, 3] per view: PSNR, SSIM, sharpness ratio."""
        p, g = hwc(pred), hwc(gt)
        return torch.stack([psnr(p, g), ssim(p, g), sharpness_ratio(p, g)], -1)

    sums: dict[str, list[torch.Tensor]] = {f"{key}@{t}": [] for key in ("sdedit", "oracle") for t in args.timesteps}
    with torch.no_grad():
        for folder in folders:
            obj = load_object_folder(folder)
            imgs, c2w, k = obj.images.to(device), obj.c2w.to(device), obj.intrinsics[None].to(device)
            h, w = imgs.shape[1:3]
            tri = nerf.encode(imgs[input_view : input_view + 1])
            source = SourceView(c2w[input_view : input_view + 1], k, (h, w))
            targets = [i for i in range(imgs.shape[0]) if i != input_view]
            renders = render_condition_views(nerf, tri, source, c2w[targets], k, h, cdm_condition_kinds(cdm))
            gt = imgs[targets].permute(0, 3, 1, 2)
            full = renders.permute(0, 3, 1, 2)
            r = full[:, :3]
            scores.setdefault("render", []).append(score(r, gt))
            cond = to_diffusion_range(full)  # the CDM's whole condition; its RGB is the render R
            src = to_diffusion_range(imgs[input_view].permute(2, 0, 1))[None].expand(len(targets), -1, -1, -1)
            rel = relative_camera(c2w[input_view][None].expand(len(targets), 4, 4), c2w[targets]) if cdm.config.camera_embedding_dim else None
            for t in args.timesteps:
                alpha, sigma = alpha_sigma(scheduler, t, cond.device)
                ts = torch.full((len(targets),), t, dtype=torch.long, device=device)

                def estimate(start: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
                    """x0^ in [-1, 1] from ``start`` re-noised at t (fresh noise unless given)."""
                    noise = torch.randn(gt.shape, generator=gen).to(device) if noise is None else noise
                    z = alpha * start + sigma * noise
                    pred = cdm.predict_with_cfg(z, ts, cond, src, rel, 1.0)
                    return x0_from_prediction(scheduler, z, pred, t, cdm.config.prediction_type).clamp(-1, 1)

                shared_noise = torch.randn(gt.shape, generator=gen).to(device)  # render and GT see the same noise
                for key, start in (("sdedit", cond[:, :3]), ("oracle", to_diffusion_range(gt))):
                    sums[f"{key}@{t}"].append(psnr(hwc(from_diffusion_range(estimate(start, shared_noise))), hwc(gt)))
                if args.average > 1 or args.repeat > 1:
                    current = cond[:, :3]
                    for round_ in range(1, args.repeat + 1):
                        current = torch.stack([estimate(current) for _ in range(args.average)]).mean(0)
                        name = f"sdedit t={t}, mean of K={args.average}" + (f", round {round_}" if args.repeat > 1 else "")
                        scores.setdefault(name, []).append(score(from_diffusion_range(current), gt))
            for gamma in args.trajectory:
                for switch in [None, *args.switch_t]:  # None: --bundle's CDM at every step
                    traj = NGDTrajectories(scheduler).init(cond, gen)
                    for t in timesteps.tolist():
                        traj.step(cdm if switch is None or t >= switch else low_cdm, t, cond, src, rel, gamma=gamma)
                    name = f"trajectory gamma={gamma:g}" + ("" if switch is None else f", low-t CDM below t={switch}")
                    scores.setdefault(name, []).append(score(traj.targets_01(), gt))
    table = {key: torch.cat(v).mean(0).cpu().tolist() for key, v in scores.items()}
    means = {"render": table["render"][0], **{key: float(torch.cat(v).mean()) for key, v in sums.items()}}
    facts = machine_facts(device)
    rows = [["render (NeRF)", "-", f"{means['render']:.2f}", "-"]]
    for t in args.timesteps:
        rows.append([f"t={t}", f"{float(alpha_sigma(scheduler, t)[1]):.3f}", f"{means[f'sdedit@{t}']:.2f}", f"{means[f'oracle@{t}']:.2f}"])
    print(f"bundle {args.bundle} ({'raw' if args.raw else 'EMA'} CDM), {len(folders)} objects of {args.data}, input view {input_view}")
    print_table("CDM one-step estimate vs the NeRF render", ["probe", "sigma_t", "PSNR x0^ from noised render", "PSNR x0^ from noised GT"], rows)
    if args.average > 1 or args.repeat > 1:
        print_table("averaged / repeated one-step estimates vs the render", ["targets", "PSNR", "SSIM", "sharpness"],
                    [[k, f"{v[0]:.2f}", f"{v[1]:.4f}", f"{v[2]:.3f}"] for k, v in table.items() if not k.startswith("trajectory")])
    if args.trajectory:
        print_table(f"fixed-render NGD trajectories (K={len(timesteps)}, t {args.t_max}->{args.t_min}) vs the render",
                    ["targets", "PSNR", "SSIM", "sharpness"], [[k, f"{v[0]:.2f}", f"{v[1]:.4f}", f"{v[2]:.3f}"] for k, v in table.items()
                                                                if not k.startswith("sdedit")])
    if args.output_json:
        write_json(args.output_json, {"machine": facts, "bundle": str(args.bundle), "objects": len(folders),
                                 "psnr": means, "trajectories": table, "args": {k: str(v) for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
