"""litpipe.model.networks: networks adapt to the data's shape and class count."""

from __future__ import annotations

import pytest
import torch

from litpipe.model.networks import build_network


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize(("shape", "classes"), [((1, 28, 28), 10), ((3, 32, 32), 10),
                                                 ((1, 8, 8), 4)])
def test_network_shapes(name: str, shape: tuple[int, int, int], classes: int) -> None:
    net = build_network(name, shape, classes, [0.5] * shape[0], [0.25] * shape[0],
                        channels=[8, 16], convs_per_block=1, hidden=[32], dropout=0.25,
                        latent_dim=4, test_time_flip=False).eval()
    out = net(torch.rand(3, *shape))
    assert out.shape == (3, classes)


def test_normalisation_is_inside_the_network() -> None:
    sizes = {"channels": [8], "convs_per_block": 1, "hidden": [16], "dropout": 0.0,
             "latent_dim": 4, "test_time_flip": False}
    a = build_network("cnn", (1, 8, 8), 3, [0.0], [1.0], **sizes).eval()
    b = build_network("cnn", (1, 8, 8), 3, [0.5], [1.0], **sizes).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if "mean" not in k},
                      strict=False)
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(a(x - 0.5), b(x), atol=1e-5)


@pytest.mark.parametrize("convs", [1, 2, 3])
def test_cnn_stacks_convs_per_block(convs: int) -> None:
    """model.convs_per_block convolutions (each with its BatchNorm) before every pool."""
    net = build_network("cnn", (1, 28, 28), 10, [0.5], [0.25], channels=[8, 16],
                        convs_per_block=convs, hidden=[32], dropout=0.0, latent_dim=4,
                        test_time_flip=False)
    convs_seen = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert [c.out_channels for c in convs_seen] == [8] * convs + [16] * convs
    assert len(pools) == 2
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_test_time_flip_answers_the_mean_of_image_and_mirror() -> None:
    """model.test_time_flip: outside training the network's softmax is the mean of the
    image's and its mirror's (what evaluate measures and the exported models compute), so a
    mirrored image gets the same answer; training sees one view."""
    torch.manual_seed(0)
    kw = {"channels": [8], "convs_per_block": 1, "hidden": [16], "dropout": 0.0,
          "latent_dim": 4}
    plain = build_network("cnn", (1, 8, 8), 3, [0.5], [0.25], test_time_flip=False, **kw)
    both = build_network("cnn", (1, 8, 8), 3, [0.5], [0.25], test_time_flip=True, **kw)
    both.load_state_dict({f"net.{k}": v for k, v in plain.state_dict().items()})
    x = torch.rand(4, 1, 8, 8)
    plain.eval(), both.eval()
    mean = (plain(x).softmax(1) + plain(x.flip(-1)).softmax(1)) / 2
    assert torch.allclose(both(x).softmax(1), mean, atol=1e-6)
    assert torch.allclose(both(x), both(x.flip(-1)), atol=1e-5)
    assert not torch.allclose(plain(x), plain(x.flip(-1)), atol=1e-3)
    plain.train(), both.train()
    assert torch.equal(both(x), plain(x))
