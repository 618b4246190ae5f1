"""The pretraining loop: builds the models and optimiser, runs steps with the non-finite guard, logs.

``Trainer(cfg).run()`` trains to ``cfg.steps``; checkpoints, resume, ``--init-from`` and bundle
export are in ``training.persistence``; the model in ``training.joint_model``; the batches in
``training.batches``; the process layout in ``training.distributed``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.data.survey import background_warning, survey_training_objects
from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.nerf.image_nerf import ImageConditionedNeRF
from nerfdiff_ns.training.batches import estimate_camera_distribution, make_batch
from nerfdiff_ns.training.config import PretrainConfig
from nerfdiff_ns.training.distributed import all_reduce_mean, init_distributed
from nerfdiff_ns.training.graceful_stop import GracefulStop
from nerfdiff_ns.training.joint_model import JointModel, build_cdm, ema_decay
from nerfdiff_ns.training.lr_schedule import check_lr_schedule, lr_factor
from nerfdiff_ns.training.persistence import RunPersistence
from nerfdiff_ns.training.phases import phase
from nerfdiff_ns.training.prefetch import BatchPrefetcher
from nerfdiff_ns.training.progress import log_line, make_progress
from nerfdiff_ns.training.augment import check_augmentations
from nerfdiff_ns.training.render_cache import build_render_cache, make_cached_batch
from nerfdiff_ns.training.run_log import LossLog
from nerfdiff_ns.training.validation import feed_forward_psnr


def check_flags(cfg: PretrainConfig) -> None:
    """Refuse bad settings before any data or model work (the render cache takes minutes) and before the run
    folder is written; each error names its flag."""
    check_lr_schedule(cfg.lr_schedule, cfg.lr_min_factor)
    check_augmentations(cfg.augment)
    for flag, rate in (("--learning-rate", cfg.learning_rate), ("--cdm.learning-rate", cfg.cdm.learning_rate)):
        # Adam moves every weight by up to the rate each step, so a rate above 1 (weights are of order 1) wrecks the
        # model within a step or two, often into weights that are still finite and would be checkpointed.
        if not (math.isfinite(rate) and 0 < rate <= 1):
            raise FlagError(f"{flag} {rate}: a learning rate must be a finite number in (0, 1] (Adam moves each weight "
                            "by up to the rate per step; the tiny preset uses 1e-3 for the NeRF and 3e-4 for the CDM)")
    pixels = cfg.render_resolution**2
    if not 0 <= cfg.target_rays <= pixels:
        raise FlagError(f"--target-rays {cfg.target_rays}: give 0 (every pixel of the target view) or a number of rays "
                        f"up to the {pixels} pixels of a --render-resolution {cfg.render_resolution} view")
    if cfg.target_rays > 0 and cfg.cdm.enabled and cfg.cdm.backprop_into_nerf and not cfg.freeze_nerf:
        raise FlagError("--target-rays renders the CDM's condition without gradients, and --cdm.backprop-into-nerf "
                        "trains the NeRF through it: drop one of the two")
    if cfg.loader_workers < 0:
        raise FlagError(f"--loader-workers {cfg.loader_workers}: give 0 (batches built in the training process) "
                        "or a number of worker processes")
    if cfg.cdm.enabled:
        cfg.cdm.timestep_sampler()  # validates --cdm.timestep-*
        cfg.cdm.check_render_start()
        if not 0.0 <= cfg.cdm.dropout < 1.0:
            raise FlagError(f"--cdm.dropout {cfg.cdm.dropout} must lie in [0, 1)")
    elif cfg.freeze_nerf:
        raise FlagError("--freeze-nerf trains only the CDM, which --cdm.no-enabled turns off: drop one of the two "
                        "(--cdm.enabled is the default)")
    if cfg.init_cdm_from is not None and cfg.init_from is None:
        raise FlagError("--init-cdm-from takes the CDM from a bundle while --init-from gives the NeRF: pass "
                        "--init-from too (the bundle whose NeRF starts this run)")


class Trainer(RunPersistence):
    """Owns the models, optimisers, EMA and the loop; ``run()`` trains to ``cfg.steps``."""

    def __init__(self, cfg: PretrainConfig) -> None:
        from nerfdiff_ns.data.multiview import MultiViewDataset
        from nerfdiff_ns.data.srn import list_srn_objects

        check_flags(cfg)
        if cfg.device == "auto":
            device_type = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device_type = cfg.device
        self.dist = init_distributed(device_type)
        if cfg.batch_size % self.dist.world_size:
            raise FlagError(f"--batch-size {cfg.batch_size} must divide by the number of processes {self.dist.world_size}")
        self.device = torch.device(device_type, self.dist.local_rank) if device_type == "cuda" else torch.device("cpu")
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        warn = (lambda line: print(f"[nerfdiff] warning: {line}")) if self.dist.is_main else None
        folders = list_srn_objects(cfg.data, "train")
        train_cameras = survey_training_objects(folders, cfg.nerf.object_radius, warn)
        self.dataset = MultiViewDataset(folders, background=cfg.nerf.background, cameras=train_cameras)
        self.val_dataset = None
        if (Path(cfg.data) / "val").is_dir():
            self.val_dataset = MultiViewDataset.from_split(cfg.data, "val", background=cfg.nerf.background)
            if cfg.steps_per_eval > 0:  # a corrupt val image fails now, not at the first evaluation
                for idx in range(min(cfg.num_eval_objects, len(self.val_dataset))):
                    self.val_dataset.load_object(idx)
        backdrop = background_warning(train_cameras, cfg.nerf.background) if warn else None  # rank 0 reads images
        if backdrop:
            warn(backdrop)
        self.cameras = estimate_camera_distribution(train_cameras)
        self.nerf = ImageConditionedNeRF(cfg.nerf, device=self.device)
        self.cdm = self.scheduler = self.ema = None
        if cfg.cdm.enabled:
            cdm, self.scheduler = build_cdm(cfg)
            self.cdm = cdm.to(self.device)
            self.ema = copy.deepcopy(self.cdm).requires_grad_(False)
        if cfg.freeze_nerf:
            self.nerf.requires_grad_(False)  # DDP and the optimiser then ignore the NeRF
        self.model = JointModel(cfg, self.nerf, self.cdm, self.scheduler)
        self.ddp_model: nn.Module = self.model
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.dist.local_rank] if device_type == "cuda" else None
            )
        groups = [] if cfg.freeze_nerf else [{"params": list(self.nerf.parameters()), "lr": cfg.learning_rate, "name": "nerf"}]
        if self.cdm is not None:
            groups.append({"params": list(self.cdm.parameters()), "lr": cfg.cdm.learning_rate, "name": "cdm"})
        self.optimizer = torch.optim.Adam(groups)
        self.base_lrs = [g["lr"] for g in groups]
        self.step = 0
        self.bad_steps = 0
        self.skipped_steps = 0
        self.ckpt_dir = Path(cfg.output_dir) / "checkpoints"
        self.loss_log = LossLog(Path(cfg.output_dir) / "losses.jsonl" if (cfg.log_jsonl and self.dist.is_main) else None)
        self.writer = None
        self.init_steps = 0  # steps the --init-from bundle had been trained for
        resumed = cfg.resume and self.maybe_resume()
        if cfg.init_from is not None and not resumed:
            self.init_from_bundle(Path(cfg.init_from), None if cfg.init_cdm_from is None else Path(cfg.init_cdm_from))
        if self.dist.is_main and cfg.log_tensorboard:  # after the checks above, so a refused run writes no folder
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(cfg.output_dir) / "tensorboard"))
        self.loss_log.start(self.step)
        self.prefetcher: BatchPrefetcher | None = None  # --loader-workers (training.prefetch)
        self.render_cache = None  # the frozen NeRF's conditions, rendered once (training.render_cache)
        if cfg.freeze_nerf and cfg.render_cache:
            self.render_cache = build_render_cache(self.model, self.dataset, cfg, self.dist, self.device)

    def _skip_step(self, reason: str) -> None:
        """Drop this step's update; stop after ``max_bad_steps`` in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.skipped_steps += 1
        if self.dist.is_main:
            print(f"[nerfdiff] step {self.step}: {reason}, step skipped ({self.bad_steps} in a row, {self.skipped_steps} in all)")
            if self.writer:
                self.writer.add_scalar("train/skipped_nonfinite", self.skipped_steps, self.step)
        if self.bad_steps >= self.cfg.max_bad_steps:
            raise FlagError(
                f"{self.bad_steps} consecutive non-finite losses or gradients at step {self.step} (limit "
                f"--max-bad-steps {self.cfg.max_bad_steps}). Lower --learning-rate or --cdm.learning-rate, disable "
                "--mixed-precision, or resume from an earlier checkpoint."
            )
        self.step += 1
        self.loss_log.append({"step": self.step, "skipped": True, "reason": reason})

    # -- loop ---------------------------------------------------------------------------------
    def batch_maker(self, device: torch.device) -> Callable[[int], dict[str, Any]]:
        """``step -> this rank's batch of that step`` on ``device`` (render-cache samples in a CDM-only stage)."""
        if self.render_cache is not None:
            return partial(make_cached_batch, self.dataset, self.render_cache, self.cfg, dist_info=self.dist, device=device)
        return partial(make_batch, self.dataset, self.cfg, dist_info=self.dist, device=device)

    def next_batch(self) -> dict[str, Any]:
        """This step's batch: built here, or by the ``--loader-workers`` processes ahead of time."""
        if self.cfg.loader_workers <= 0:
            return self.batch_maker(self.device)(self.step)
        if self.prefetcher is None:
            self.prefetcher = BatchPrefetcher(self.batch_maker(torch.device("cpu")), self.cfg.steps,
                                              self.cfg.loader_workers, self.device)
        return self.prefetcher.get(self.step)

    def lr_factor(self) -> float:
        cfg = self.cfg
        return lr_factor(self.step, cfg.lr_warmup_steps, cfg.steps, cfg.lr_schedule, cfg.lr_min_factor)

    def train_step(self) -> dict[str, float] | None:
        cfg = self.cfg
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.lr_factor()
        with phase("batch"):
            batch = self.next_batch()
        use_amp = cfg.mixed_precision and self.device.type == "cuda"
        with phase("forward"), torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = self.ddp_model(batch)
        losses = {k: v for k, v in out.items() if k.endswith("_loss")}
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        with phase("loss_check"):
            finite = bool(torch.isfinite(all_reduce_mean(total.detach().float(), self.dist)))
        if not finite:
            self._skip_step("non-finite loss")
            return None
        with phase("backward"):
            total.backward()
        # The norm is always measured (max_norm inf scales by exactly 1) so non-finite gradients
        # (finite loss, overflowing backward) are caught before they reach the weights.
        with phase("clip"):
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            finite = bool(torch.isfinite(all_reduce_mean(grad_norm.detach().float(), self.dist)))
        if not finite:
            self._skip_step("non-finite gradient")
            return None
        self.bad_steps = 0
        with phase("optimizer"):
            self.optimizer.step()
        if self.ema is not None:
            with phase("ema"), torch.no_grad():
                decay = ema_decay(cfg.cdm.ema_decay, self.step)
                for e, p in zip(self.ema.parameters(), self.cdm.parameters()):
                    e.lerp_(p, 1.0 - decay)
        self.step += 1
        with phase("stats"):
            stats = {k: float(all_reduce_mean(v.detach().float(), self.dist)) for k, v in losses.items()}
            stats["total_loss"] = sum(stats.values())
            if "nerf_mse" in out:
                stats["nerf_mse"] = float(all_reduce_mean(out["nerf_mse"].detach().float(), self.dist))
            stats["grad_norm"] = float(grad_norm)
            # the NeRF term is the render's mean squared error (over --target-rays pixels when it is set)
            mse = stats.get("nerf_loss", stats.get("nerf_mse"))
            stats["train_psnr"] = -10 * math.log10(max(mse, 1e-10))
        self.loss_log.append({"step": self.step, **stats})
        return stats

    def evaluate(self) -> dict[str, float]:
        """Feed-forward novel-view PSNR on a few validation objects (tensorboard gets a panel too)."""
        psnr, panel = feed_forward_psnr(self.nerf, self.val_dataset, self.cfg.num_eval_objects, self.device)
        if psnr is None:
            return {}
        if self.writer:
            self.writer.add_image("val/input_render_target", panel, self.step, dataformats="HWC")
        return {"val_psnr": psnr}

    def run(self) -> dict[str, float]:
        cfg = self.cfg
        last: dict[str, float] = {}
        progress = make_progress("pretrain", disable=not self.dist.is_main)
        start = time.time()
        # One process: SIGINT stops after the current step with a checkpoint (DDP ranks keep the default, since a
        # rank that stopped alone would leave the others waiting in a collective).
        self.stop = GracefulStop() if self.dist.world_size == 1 else None
        with progress, (self.stop or contextlib.nullcontext()):
            task = progress.add_task("train", total=cfg.steps, completed=self.step, info="")
            if self.step >= cfg.steps and self.dist.is_main:
                log_line(progress, f"already at step {self.step} (--steps {cfg.steps}): nothing to train; raise --steps "
                                   "to continue this run")
            while self.step < cfg.steps:
                if self.stop is not None and self.stop.requested:
                    self.save()
                    log_line(progress, f"interrupted (SIGINT): stopped at step {self.step}, checkpoint and bundle saved; "
                                       "run the same command again to resume")
                    break
                try:
                    stats = self.train_step()
                except DataError:  # an image that only fails to decode: keep the steps done so far
                    if self.step > 0 and self.dist.world_size == 1:  # (under DDP the other ranks wait in a collective)
                        self.save()
                        log_line(progress, f"stopped at step {self.step} on a data error; checkpoint and bundle saved: "
                                           "fix the file and run the same command again to resume")
                    raise
                if stats is None:  # skipped; still checkpoint on schedule (and at the end)
                    if self.step % cfg.steps_per_checkpoint == 0 or self.step == cfg.steps:
                        self.save()
                    progress.update(task, completed=self.step, info=f"skipped {self.skipped_steps} non-finite")
                    continue
                last = stats
                if self.dist.is_main and self.writer and self.step % cfg.steps_per_log == 0:
                    for key, value in stats.items():
                        self.writer.add_scalar(f"train/{key}", value, self.step)
                    self.writer.add_scalar("train/steps_per_sec", self.step / max(1e-6, time.time() - start), self.step)
                if cfg.steps_per_eval and self.step % cfg.steps_per_eval == 0 and self.dist.is_main:
                    last.update(self.evaluate())
                    if "val_psnr" in last:  # also where there is no tensorboard (a bare GPU worker)
                        log_line(progress, f"step {self.step}: feed-forward val PSNR {last['val_psnr']:.2f} dB "
                                           f"({min(cfg.num_eval_objects, len(self.val_dataset))} objects)")
                    if self.writer:
                        for key, value in last.items():
                            if key.startswith("val"):
                                self.writer.add_scalar(f"val/{key}", value, self.step)
                if self.step % cfg.steps_per_checkpoint == 0 or self.step == cfg.steps:
                    self.save()
                progress.update(task, completed=self.step, info=f"loss {stats['total_loss']:.4f} psnr {stats['train_psnr']:.2f}")
        if self.prefetcher is not None:
            self.prefetcher.close()
        if self.writer:
            self.writer.flush()
        return last
