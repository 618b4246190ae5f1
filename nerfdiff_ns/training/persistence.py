"""What a pretraining run reads and writes besides its steps: checkpoints, resume, ``--init-from``, bundles.

A mixin of ``training.loop.Trainer`` (it uses the trainer's ``cfg``, ``dist``, ``nerf``, ``cdm``,
``ema``, ``optimizer``, ``step`` counters, ``ckpt_dir`` and ``cameras``), kept apart so the loop
reads as the loop.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from nerfdiff_ns.bundle import BundleConfig, save_bundle
from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.training import checkpoint as ckpt
from nerfdiff_ns.training.config import RESOLUTION_KEYS, architecture_differences, config_to_json, resumed_setting_changes


class RunPersistence:
    """Checkpoint state, atomic saves with bundle export, resume and warm start from a bundle."""

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "nerf": self.nerf.state_dict(),
            "cdm": self.cdm.state_dict() if self.cdm is not None else {},
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "optimizer": self.optimizer.state_dict(),
            "rng": ckpt.rng_state(),
            "bad_steps": self.bad_steps,
            "skipped_steps": self.skipped_steps,
            "config": config_to_json(self.cfg),
            "init_steps": self.init_steps,
        }

    def save(self) -> None:
        if not self.dist.is_main:
            return
        broken = [name for name, module in (("NeRF", self.nerf), ("CDM", self.cdm)) if module is not None
                  and not all(bool(torch.isfinite(p).all()) for p in module.parameters())]
        if broken:  # keep the last good checkpoint and bundle instead of replacing them with NaNs
            raise FlagError(
                f"the {' and '.join(broken)} weights are no longer finite at step {self.step}: training diverged, and "
                f"nothing was saved for this step (the checkpoints in {self.ckpt_dir} are from before). Lower "
                "--learning-rate or --cdm.learning-rate and run again: it resumes from the latest checkpoint.")
        ckpt.atomic_torch_save(self.state(), self.ckpt_dir / f"step-{self.step:09d}.pt")
        ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        self.export_bundle()

    def _architecture_differences(self, bundle: Any) -> tuple[list[str], bool, list[str]]:
        """What keeps ``bundle`` from starting this run (``["nerf.x: a (bundle) != b (now)", ...]``), whether its
        RGB-only CDM must be widened to take --cdm.conditions (zero weights on the new channels), and the resolution
        differences its convolutional weights bridge (a 32² bundle starting a 64² run)."""
        saved = {"nerf": dataclasses.asdict(bundle.config.nerf), "cdm": bundle.config.extra.get("pretrain_config", {}).get("cdm", {})}
        diffs = architecture_differences(json.dumps(saved, default=str), self.cfg, source="bundle")
        if not bundle.config.has_cdm or not self.cfg.cdm.enabled:  # a NeRF-only run takes the NeRF alone
            diffs = [d for d in diffs if not d.startswith("cdm.")]
        widen = bundle.config.has_cdm and not saved["cdm"].get("conditions") and bool(self.cfg.cdm.conditions)
        if widen:
            diffs = [d for d in diffs if not d.startswith("cdm.conditions:")]
        resized = [d for d in diffs if d.split(":")[0] in RESOLUTION_KEYS]
        if resized and self.cfg.nerf.encoder.kind == "unet" and bundle.config.nerf.encoder.kind == "unet":
            diffs = [d for d in diffs if d not in resized]  # conv weights and the UNet CDM work at any size
        else:
            resized = []
        return diffs, widen, resized

    def init_from_bundle(self, path: Path, cdm_path: Path | None = None) -> None:
        """Copy a bundle's NeRF and CDM (EMA too, when it has one) into this run's models; the CDM comes from
        ``cdm_path`` (--init-cdm-from) instead when given."""
        from nerfdiff_ns.bundle import BundleError, load_bundle

        bundle = load_bundle(path)
        diffs, widen, resized = self._architecture_differences(bundle)
        problems = [(path, "--init-from", diffs)]
        cdm_bundle, cdm_source, cdm_flag = bundle, path, "--init-from"
        if cdm_path is not None:  # the NeRF is checked against --init-from, the CDM against --init-cdm-from
            cdm_bundle, cdm_source, cdm_flag = load_bundle(cdm_path), cdm_path, "--init-cdm-from"
            cdm_diffs, widen, cdm_resized = self._architecture_differences(cdm_bundle)
            problems = [(path, "--init-from", [d for d in diffs if not d.startswith("cdm.")]),
                        (cdm_path, cdm_flag, [d for d in cdm_diffs if d.startswith("cdm.")])]
        for where, flag, found in problems:
            if found:
                raise BundleError(
                    f"{flag} {where} has a different architecture ({'; '.join(found)}). Use the preset and flags the "
                    f"bundle was trained with (its config.json records them under extra.pretrain_config), or drop "
                    f"{flag} to start from scratch."
                )
        started = [("--init-from", path, bundle, resized)]
        if cdm_path is not None:
            started.append((cdm_flag, cdm_path, cdm_bundle, cdm_resized))
        for flag, where, source, differences in started:
            if differences and self.dist.is_main:
                print(f"[nerfdiff] {flag} {where} was trained at {source.config.nerf.image_size}²; its convolutional "
                      f"weights start this {self.cfg.nerf.image_size}² run ({'; '.join(differences)})")
        self.nerf.load_state_dict(bundle.load_nerf("cpu").state_dict())
        if self.cdm is not None and cdm_bundle.config.has_cdm:
            from nerfdiff_ns.cdm.conditions import widen_condition_inputs

            for target, ema in ((self.cdm, False), (self.ema, True)):
                state = cdm_bundle.load_cdm("cpu", ema=ema).state_dict()
                if widen:
                    state = widen_condition_inputs(state, self.cfg.condition_channels() - 3)
                target.load_state_dict(state)
            if widen and self.dist.is_main:
                print(f"[nerfdiff] {cdm_source}: RGB-only CDM widened to take {list(self.cfg.cdm.conditions)} (new inputs start at 0)")
        elif self.cdm is not None and not self.cfg.freeze_nerf:
            raise BundleError(
                f"{cdm_flag} {cdm_source} has no CDM; pass a bundle trained with the CDM enabled, or add --freeze-nerf to "
                "train a new CDM on this NeRF-only bundle's frozen NeRF (the two-stage recipe)."
            )
        elif self.cdm is not None and self.dist.is_main:
            print(f"[nerfdiff] {cdm_source} is NeRF-only: the CDM starts from scratch on its frozen NeRF")
        self.init_steps = int(bundle.config.extra.get("trained_steps", 0)) + int(bundle.config.extra.get("init_steps", 0))
        if self.dist.is_main:
            cdm_note = f", CDM from {cdm_path}" if cdm_path is not None else ""
            print(f"[nerfdiff] initialised from bundle {path} ({self.init_steps} steps trained before{cdm_note})")

    def maybe_resume(self) -> bool:
        """Load the latest checkpoint of output_dir; False when there is none."""
        path = ckpt.latest_checkpoint(self.ckpt_dir)
        if path is None:
            return False
        state = ckpt.load_checkpoint(path)
        diffs = architecture_differences(state["config"], self.cfg) if "config" in state else []
        if diffs:
            raise FlagError(
                f"checkpoint {path} was trained with a different architecture ({'; '.join(diffs)}). Resume with the "
                "same preset and flags, or pass --no-resume / a new --output-dir to start fresh."
            )
        try:
            self.nerf.load_state_dict(state["nerf"])
            if self.cdm is not None:
                self.cdm.load_state_dict(state["cdm"])
                self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise FlagError(
                f"checkpoint {path} does not match this configuration ({err}). Resume with the same preset and "
                "flags, or pass --no-resume / a new --output-dir to start fresh."
            ) from err
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.bad_steps = int(state.get("bad_steps", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.init_steps = int(state.get("init_steps", 0))
        if self.dist.is_main:
            print(f"[nerfdiff] resumed from {path} at step {self.step}")
            changed = resumed_setting_changes(state["config"], self.cfg) if "config" in state else []
            if changed:
                print(f"[nerfdiff] note: this run changes {len(changed)} training setting(s) of the checkpoint "
                      f"({'; '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}); it continues with them, so it "
                      "no longer repeats an uninterrupted run")
        return True

    def export_bundle(self, path: Path | None = None) -> Path:
        from nerfdiff_ns.cdm.schedule import make_sampling_scheduler

        cfg = self.cfg
        bundle_cfg = BundleConfig(
            nerf=dataclasses.replace(cfg.nerf, mlp_implementation="torch" if self.nerf.implementation == "torch" else "auto",
                                     encoder=self.nerf.encoder.bundle_config(cfg.nerf.encoder)),
            cameras=self.cameras,
            extra={"trained_steps": self.step, "init_steps": self.init_steps, "init_from": str(cfg.init_from) if cfg.init_from else None,
                   "dataset": str(cfg.data), "pretrain_config": json.loads(config_to_json(cfg))},
        )
        sampling = None
        if self.cdm is not None:
            sampling = make_sampling_scheduler(
                num_train_timesteps=cfg.cdm.num_train_timesteps, beta_schedule=cfg.cdm.beta_schedule,
                prediction_type=cfg.cdm.prediction_type,
            )
        return save_bundle(path or Path(cfg.output_dir) / "bundle", bundle_cfg, self.nerf, self.cdm, self.ema, sampling)
