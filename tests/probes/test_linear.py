import torch

from ssl_biases.probes.linear import LinearProbe, linear_probe_top1


def test_offline_linear_probe_separates_linearly_separable_data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 16, generator=g)
    x = torch.randn(300, 16, generator=g)
    y = (x @ w.T).argmax(1)
    assert linear_probe_top1(x[:200], y[:200], x[200:], y[200:]) >= 0.95
    assert LinearProbe().evaluate(x[:200], y[:200], x[200:], y[200:])["offline_linear_top1"] >= 0.95


def test_offline_linear_probe_is_at_chance_on_random_labels():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 8, generator=g)
    y = torch.randint(0, 4, (400,), generator=g)
    assert linear_probe_top1(x[:200], y[:200], x[200:], y[200:]) < 0.4


def test_online_probe_never_changes_the_backbone():
    from ssl_biases.backbones import IsotropicNet
    from ssl_biases.methods import SimCLR
    from ssl_biases.methods.training import Training

    net = IsotropicNet(width=32, depth=1, num_heads=2)
    method = SimCLR(net, training=Training(num_classes=3))
    features = method.backbone(torch.randn(4, 3, 32, 32))
    method.online_probe_loss(features, torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is None for p in method.backbone.parameters())
    assert method.online_probe.weight.grad.abs().sum() > 0
