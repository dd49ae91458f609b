"""`TrainingHook`: the no-op default, the lens as one, and no import of the base from either."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

import ssl_biases.methods.hook as hook_module
import ssl_biases.methods.lens as lens_module
from ssl_biases.methods import SimCLR
from ssl_biases.methods.hook import NO_HOOK, SSLLosses
from ssl_biases.methods.lens import Lens


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, TYPE_CHECKING blocks included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_hook_and_the_lens_never_import_the_base() -> None:
    for module in (hook_module, lens_module):
        imports = imported_modules(Path(module.__file__))
        assert not any(name.startswith("ssl_biases.methods.base") for name in imports), imports


def test_no_hook_runs_the_ssl_step_unchanged_and_adds_nothing() -> None:
    views = [torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)]
    seen = []

    def ssl_step(given: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(given)
        return torch.tensor(1.5), torch.ones(4, 2)

    step = NO_HOOK.ssl_losses(views, ssl_step)
    assert seen == [views] and step.ssl.item() == 1.5 and step.extra == 0.0
    assert step.metrics == {} and NO_HOOK.configure_optimizer(None) is None
    assert NO_HOOK.eval_features(None, None, views[0], step.features, 0, 1) == {}


def test_the_lens_is_the_method_hook_and_adds_its_weighted_edit(fixed_images, tiny_net) -> None:
    plain = SimCLR(tiny_net(), projection_hidden_dim=16, projection_dim=8)
    assert plain.hook is NO_HOOK and plain.automatic_optimization
    lens = Lens(lambda_rec=0.5, width=4)
    model = SimCLR(tiny_net(), projection_hidden_dim=16, projection_dim=8, lens=lens)
    assert model.hook is lens and not model.automatic_optimization
    torch.nn.init.normal_(lens.out.weight, std=0.1)  # a lens that edits
    views = [fixed_images(4), fixed_images(4).flip(-1)]
    torch.manual_seed(0)
    step = model.hook.ssl_losses(views, model.ssl_step)
    assert isinstance(step, SSLLosses)
    with torch.no_grad():
        rec = sum((lens(v) - v).pow(2).mean() for v in views) / 2
        torch.manual_seed(0)
        expected = model.ssl_step([lens(v) for v in views])[0]
    torch.testing.assert_close(step.ssl.detach(), expected)
    torch.testing.assert_close(step.extra.detach(), 0.5 * rec)
    assert set(step.metrics) == {"train/lens_rec_loss", "train/lens_loss"}
    torch.testing.assert_close(step.metrics["train/lens_loss"].detach(), 0.5 * rec - expected)
