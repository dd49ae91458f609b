"""`SSLMethod`: what every self-supervised method shares.

A method subclass supplies only its heads, its loss (:meth:`SSLMethod.ssl_step`) and its views
(:meth:`SSLMethod.train_views`). The base owns the backbone, the online linear probe, the
optimizer parameter groups, LR scaling, warm-up + cosine schedule, the momentum (EMA) teachers
(:meth:`SSLMethod.momentum_pairs`) and the logged names. On a GPU it trains as
``benchmarks/gpu_check`` measures (:mod:`ssl_biases.methods.gpu`): losses in fp32 under
``bf16-mixed``, fused AdamW, channels_last for conv backbones, ``compile`` of every backbone
entry point. The schedules are sized by
``max_steps``/``max_epochs``, or by a time budget when ``max_time`` alone bounds the run
(:mod:`ssl_biases.methods.schedules`; the run's :mod:`ssl_biases.run.budget` measures it).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
from timm.layers import DropPath
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.classification import MulticlassAccuracy

from ssl_biases.data.transforms import Normalization
from ssl_biases.data.views import ViewRecipe, per_image_views
from ssl_biases.methods.gpu import (
    LOSS_SUFFIX,
    autocast_off,
    compile_entry_points,
    compute_in_fp32,
    fused_kwargs,
    to_channels_last,
    wants_channels_last,
)
from ssl_biases.methods.hook import NO_HOOK, TrainingHook
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.schedules import ScheduleClock, cosine_between, warmup_cosine
from ssl_biases.methods.training import Training
from ssl_biases.metric_names import (
    LINEAR_TOP1,
    TEST,
    TRAIN_LOSS,
    TRAIN_MOMENTUM,
    TRAIN_ONLINE_PROBE_LOSS,
    VAL,
    staged,
)

NO_WEIGHT_DECAY_NAMES = ("pos_embed", "token", "latent")
DEFAULT_TRAINING = Training()
TRAINING_KEY = "training"  # where the hyperparameters hold the Training fields


def split_weight_decay(named_params: Iterable[tuple[str, nn.Parameter]]) -> list[dict[str, Any]]:
    """Two parameter groups: decayed weights, and undecayed norms, biases, tokens, pos-embeds."""
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or any(key in name for key in NO_WEIGHT_DECAY_NAMES):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def _no_closure() -> None:
    return None


class SSLMethod(pl.LightningModule):
    """Base LightningModule of the SSL methods.

    Args:
        backbone: Any registered backbone (``num_features`` and ``forward(x) -> [B, D]``).
        lens: An adversarial :class:`~ssl_biases.methods.lens.Lens` (arXiv 2002.08822) that
            every view passes through; training then uses manual optimisation with two
            optimizers, and probes also report lensed and concatenated features.
        training: What every method shares (:class:`~ssl_biases.methods.training.Training`:
            optimizer and scheduler factories, warm-up, LR scaling, online probe, compile).

    A subclass takes the backbone, its own arguments, then ``lens`` and ``training``
    keyword-only (``*``), and passes those three on. ``save_hyperparameters`` runs once, here,
    and collects the whole constructor chain's arguments but the backbone, the lens and the
    training object, whose plain-data fields it saves under ``training``
    (:meth:`Training.hparams <ssl_biases.methods.training.Training.hparams>`).

    Losses in fp32: a submodule assigned to an attribute whose name ends with ``criterion``
    (``self.criterion``, ``self.patch_criterion``) runs with autocast off and float32 inputs
    (:func:`~ssl_biases.methods.gpu.compute_in_fp32`); a loss written as a function or method
    is decorated with :func:`~ssl_biases.methods.gpu.fp32_loss`. A new method does one or the
    other for every loss it computes (``tests/methods/test_bf16.py`` checks each method).
    """

    #: ``torch.compile`` options of ``training.compile`` (tests use ``{"backend": "eager"}``).
    compile_options: dict[str, Any] = {}

    def __init__(
        self,
        backbone: nn.Module,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        super().__init__()
        if not hasattr(backbone, "num_features"):
            raise ValueError(
                f"{type(backbone).__name__} has no `num_features`: use a backbone from "
                "ssl_biases.backbones (see `ssl-biases backbones`)."
            )
        # once for every method: Lightning's `collect_init_args` walks the stack from this frame
        # up through each subclass's __init__, so the whole chain's arguments are saved
        self.save_hyperparameters(ignore=["backbone", "lens", "training"])
        # the factories stay out (as the backbone does): plain data only, weights_only-loadable
        self.save_hyperparameters({TRAINING_KEY: training.hparams()})
        self.backbone = backbone
        # the lens trains against the SSL loss; it is the method's training hook (hook.py)
        self.lens = lens
        self.automatic_optimization = not self.hook.has_optimizer
        self.training_setup = training  # not `self.training`: nn.Module's train/eval flag
        self.online_probe = nn.Linear(backbone.num_features, training.num_classes)
        self.val_linear_top1 = MulticlassAccuracy(num_classes=training.num_classes)
        self.test_linear_top1 = MulticlassAccuracy(num_classes=training.num_classes)

    @classmethod
    def arguments_of(cls, local_vars: dict[str, Any]) -> dict[str, Any]:
        """The arguments of ``cls.__init__``, read from a subclass constructor's ``locals()``.

        For a method built on another method (iBOT on DINO, MAE and masked modelling on
        :class:`~ssl_biases.methods.reconstruction.MaskedReconstruction`): it restates the
        parent's arguments (same types and defaults, so jsonargparse lists and checks each) and
        forwards them with ``super().__init__(**Parent.arguments_of(locals()))`` rather than
        spelling each name twice. A method on the base passes ``backbone, lens=lens,
        training=training`` itself.
        """
        names = inspect.signature(cls.__init__).parameters
        return {name: local_vars[name] for name in names if name != "self"}

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, nn.Module) and name.endswith(LOSS_SUFFIX):
            compute_in_fp32(value)  # a loss: fp32 under bf16 autocast
        super().__setattr__(name, value)

    # ------------------------------------------------------------------ hooks for subclasses
    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Computes the SSL loss of a batch of views.

        Returns:
            ``(loss, features)`` where ``features`` ``[B, num_features]`` are the backbone's
            embeddings of the first view (the online probe trains on them, detached).
        """
        raise NotImplementedError

    def train_views(self, image_size: int, norm: Normalization) -> Callable[[Any], list[Tensor]]:
        """The augmentation that turns one training image into the method's list of views.

        By default lightly's per-image transforms built from :meth:`view_recipe`, so the
        loader-worker views and the device views (``--data.augment device``) come from one
        statement; a method without a recipe overrides this.
        """
        recipe = self.view_recipe(image_size)
        if recipe is None:
            raise NotImplementedError(
                f"{type(self).__name__} states no view_recipe: override train_views or view_recipe"
            )
        return per_image_views(recipe, norm)

    def view_recipe(self, image_size: int) -> ViewRecipe | None:
        """The method's views as data (``--data.augment device`` needs it); ``None``: none."""
        return None

    # ------------------------------------------------------------------ momentum teacher
    # Methods with an EMA teacher (BYOL, DINO) list their (student, teacher) pairs in
    # `momentum_pairs` and set `momentum_start`; the base updates every teacher after each
    # optimisation step with momentum m = cosine_schedule(step, total_steps, momentum_start, 1).
    momentum_start: float = 0.99

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(student, teacher)`` pairs whose teacher is an EMA of the student (none here)."""
        return []

    @staticmethod
    def make_teacher(student: nn.Module, fresh: nn.Module | None = None) -> nn.Module:
        """A frozen copy of ``student`` (``requires_grad=False``, stochastic depth off), to be
        updated by EMA only.

        Args:
            student: The module to copy (``copy.deepcopy``).
            fresh: For modules ``deepcopy`` cannot copy (torch's old ``weight_norm``, as in
                lightly's ``DINOProjectionHead``): a newly built module of the same
                architecture, which gets the student's state.
        """
        if fresh is None:
            teacher = copy.deepcopy(student)
        else:
            teacher = fresh
            teacher.load_state_dict(student.state_dict())
        deactivate_requires_grad(teacher)
        for module in teacher.modules():  # a deterministic teacher, as DINO's (no drop path)
            if isinstance(module, DropPath):
                module.drop_prob = 0.0
        return teacher

    def momentum(self, step: int) -> float:
        """Teacher momentum for the update after optimisation step ``step`` (0-based).

        ``cosine_schedule(step, total_steps, momentum_start, 1.0)`` (BYOL, arXiv 2006.07733):
        ``momentum_start`` after the first step, 1.0 after the last. The position comes from
        ``global_step`` and ``trainer.estimated_stepping_batches`` only, so a run resumed from a
        checkpoint continues the schedule exactly. When ``max_time`` alone bounds the run, the
        same cosine follows the :class:`~ssl_biases.run.budget.TimeBudget`'s progress
        instead (1.0 at the last step that fits the budget); a time budget on top of an epoch or
        step bound keeps that bound's schedule (m may not reach 1 before time runs out). With
        no bound at all (``max_epochs: -1``, no trainer) m stays at ``momentum_start``.
        """
        budget = self.time_budget()
        if budget is not None:
            return cosine_between(budget.progress(step), self.momentum_start, 1.0)
        total = self.total_steps()
        if math.isinf(total):
            return float(self.momentum_start)
        return cosine_schedule(min(step, int(total) - 1), int(total), self.momentum_start, 1.0)

    @torch.no_grad()
    def update_teachers(self, m: float) -> None:
        """``teacher = m * teacher + (1 - m) * student`` for every pair (``update_momentum``),
        autocast off (manual optimisation steps inside the autocast of the training step)."""
        with autocast_off():
            for student, teacher in self.momentum_pairs():
                update_momentum(student, teacher, m)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """The optimiser step, then the EMA update of the teachers (before any callback sees
        the step, so a checkpoint written at this step holds the updated teachers).

        Manual optimisation skips this hook: call
        ``self.update_teachers(self.momentum(self.global_step - 1))`` after stepping.
        """
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.momentum_pairs():
            m = self.momentum(self.global_step)  # Lightning counts this step after the hook
            self.update_teachers(m)
            self.log(TRAIN_MOMENTUM, m)

    # channels_last and opt-in torch.compile of the backbone
    def configure_model(self) -> None:
        """Lightning calls this once, before the strategy moves and wraps (DDP) the model.

        On CUDA a conv backbone's weights go to channels_last (:meth:`use_channels_last`; the
        images follow in every step). With ``compile`` set, the backbone and its EMA teachers
        are compiled in place: ``forward`` and every entry point methods call around it
        (``embed_patches``, ``forward_tokens``, ``pool_tokens``, ``forward_features``;
        :func:`~ssl_biases.methods.gpu.compile_entry_points`), with :attr:`compile_options`.
        """
        if self._trainer is not None:  # before the strategy moves and wraps the model (DDP)
            device_type = self.trainer.strategy.root_device.type
            self.use_channels_last(wants_channels_last(self.backbone, device_type))
        if self.training_setup.compile and not getattr(self, "_backbone_compiled", False):
            teachers = [t for s, t in self.momentum_pairs() if s is self.backbone]
            for module in (self.backbone, *teachers):
                compile_entry_points(module, **self.compile_options)
            self._backbone_compiled = True

    def use_channels_last(self, enabled: bool) -> None:
        """Puts the module's 4-D weights and every step's images in channels_last (or not)."""
        self._channels_last = enabled
        if enabled:
            self.to(memory_format=torch.channels_last)

    def _layout(self, images: Any) -> Any:
        return to_channels_last(images) if getattr(self, "_channels_last", False) else images

    # ------------------------------------------------------------------------- training
    @property
    def hook(self) -> TrainingHook:
        """The :class:`~ssl_biases.methods.hook.TrainingHook` the steps call: the lens, if set."""
        return self.lens if self.lens is not None else NO_HOOK

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        """SSL loss (through the hook) + online probe loss; with a hook of its own optimizer
        (manual optimisation) the step also steps the optimizers (:meth:`manual_step`)."""
        views, labels = batch
        views = self._layout(views)
        step = self.hook.ssl_losses(views, self.ssl_step)
        probe_loss = self.online_probe_loss(step.features, labels)
        total = step.ssl + probe_loss + step.extra
        if not self.automatic_optimization:
            self.manual_step(total)
        batch_size = labels.shape[0]
        # not prog_bar: Lightning would read it back every step (a host sync); the CLI's bar
        # shows the last logged value instead (ssl_biases.run.progress)
        self.log(TRAIN_LOSS, step.ssl, batch_size=batch_size)
        self.log(TRAIN_ONLINE_PROBE_LOSS, probe_loss, batch_size=batch_size)
        for name, value in step.metrics.items():
            self.log(name, value, batch_size=batch_size)
        return total if self.automatic_optimization else step.ssl.detach()

    def manual_step(self, total: Tensor) -> None:
        """One backward pass, then every optimizer's step and every scheduler's (manual
        optimisation, when the hook has an optimizer of its own).

        The first optimizer (backbone and heads) counts the global step and is followed by
        the EMA update of the teachers, as :meth:`optimizer_step` does in automatic mode. The
        others are stepped through the strategy (so mixed precision is handled) without
        counting as a global step: ``trainer.global_step`` stays the number of batches.
        """
        main, *others = self.optimizers()
        for optimizer in (main, *others):
            optimizer.zero_grad()
        self.manual_backward(total)
        main.step()  # counts the global step
        if self.momentum_pairs():
            m = self.momentum(self.global_step - 1)
            self.update_teachers(m)
            self.log(TRAIN_MOMENTUM, m)
        for optimizer in others:
            self.trainer.strategy.optimizer_step(optimizer.optimizer, _no_closure, self)
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def online_probe_loss(self, features: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of the online probe on detached features (labels < 0 are ignored)."""
        logits = self.online_probe(features.detach())  # [B, C]
        # a sum over labelled items / their count: no host sync, and 0 for an unlabelled batch
        losses = F.cross_entropy(logits, labels, ignore_index=-1, reduction="none")  # [B]
        return losses.sum() / (labels >= 0).sum().clamp_min(1)

    # ----------------------------------------------------------------------- evaluation
    def _eval_step(
        self, batch: tuple[Tensor, Tensor], dataloader_idx: int, stage: str, batch_idx: int = 0
    ) -> dict:
        images, labels = batch
        images = self._layout(images)
        features = self.backbone(images)  # [B, D]
        if dataloader_idx == 1:
            metric = self.val_linear_top1 if stage == VAL else self.test_linear_top1
            metric(self.online_probe(features), labels)
            self.log(
                staged(stage, LINEAR_TOP1),
                metric,
                add_dataloader_idx=False,
                prog_bar=stage == VAL,
                batch_size=labels.shape[0],
            )
        outputs = {"features": features, "labels": labels}
        # a hook's own features, e.g. the lens's `features_lensed`, `features_concat`
        outputs.update(
            self.hook.eval_features(
                self, self.backbone, images, features, batch_idx, dataloader_idx
            )
        )
        return outputs

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._eval_step(batch, dataloader_idx, VAL, batch_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._eval_step(batch, dataloader_idx, TEST, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict:
        images, labels = batch
        return {"embeddings": self.backbone(images), "labels": labels}

    # ----------------------------------------------------------------------- optimisation
    def lr_scale(self) -> float:
        """``global_batch / reference_batch_size`` (1 when scaling is off)."""
        setup = self.training_setup
        if not setup.scale_lr or self._trainer is None:
            return 1.0
        datamodule = getattr(self.trainer, "datamodule", None)
        batch_size = getattr(datamodule, "batch_size", setup.reference_batch_size)
        world = self.trainer.world_size * self.trainer.accumulate_grad_batches
        return batch_size * world / setup.reference_batch_size

    def total_steps(self) -> float:
        """Optimisation steps of the run (``inf`` when no step or epoch bound sizes it, or when
        no trainer is attached; see :meth:`time_budget` for a run bounded by ``max_time``)."""
        if self._trainer is None:
            return math.inf
        return float(self.trainer.estimated_stepping_batches)

    def time_budget(self) -> ScheduleClock | None:
        """The trainer's active :class:`~ssl_biases.methods.schedules.ScheduleClock` (the run's
        :class:`~ssl_biases.run.budget.TimeBudget`): set when ``max_time`` alone bounds the run,
        and then the schedules follow its progress."""
        if self._trainer is None:
            return None
        for callback in self.trainer.callbacks:
            if isinstance(callback, ScheduleClock) and callback.active:
                return callback
        return None

    def _decay_groups(self) -> list[dict[str, Any]]:
        return split_weight_decay(
            (name, param)
            for module_name, module in self.named_children()
            if module_name not in ("online_probe", "lens")  # the lens has its own optimizer
            for name, param in module.named_parameters(prefix=module_name)
        )

    def configure_optimizers(self) -> Any:
        """The optimizer (fused on CUDA when it can be, :func:`~ssl_biases.methods.gpu.
        fused_kwargs`) of the backbone and heads plus the online probe's group, and the LR
        schedule."""
        groups = self._decay_groups()
        setup = self.training_setup
        optimizer = setup.optimizer(groups)
        fused = fused_kwargs(optimizer)  # fused AdamW on CUDA (one kernel for all params)
        if fused:
            optimizer = setup.optimizer(self._decay_groups(), **fused)
        scale = self.lr_scale()
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * scale
            group["initial_lr"] = group["lr"]
        optimizer.add_param_group(
            {
                "params": list(self.online_probe.parameters()),
                "lr": setup.online_probe_lr,
                "initial_lr": setup.online_probe_lr,
                "weight_decay": 0.0,
                "name": "online_probe",
            }
        )
        budget = self.time_budget()
        if setup.scheduler is not None:
            scheduler = setup.scheduler(optimizer)
        elif budget is not None:  # max_time alone: the same shape, over the budget's progress
            warmup = setup.warmup_fraction

            def factor(step: int) -> float:  # a function: LambdaLR keeps it out of state_dict
                return warmup_cosine(budget.progress(step), budget.progress(step + 1), warmup)

            scheduler = LambdaLR(optimizer, factor)
        else:
            total = self.total_steps()
            if math.isinf(total):  # no bound at all (max_epochs -1): warm up, then hold
                total = 10**12
            warmup = int(setup.warmup_fraction * total)
            scheduler = CosineWarmupScheduler(
                optimizer, warmup_epochs=warmup, max_epochs=int(total), end_value=0.0
            )
        main = {"scheduler": scheduler, "interval": "step"}
        own = self.hook.configure_optimizer(scheduler)  # e.g. the lens's AdamW
        if own is None:
            return {"optimizer": optimizer, "lr_scheduler": main}
        return [optimizer, own[0]], [main, own[1]]
