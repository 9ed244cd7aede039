import dataclasses
import pickle

import pytest
import torch
from conftest import SMALL

from avg_rt import checkpoint
from avg_rt.config import TrainConfig
from avg_rt.errors import CheckpointError
from avg_rt.model import Discriminator, Generator


class Payload:
    """A pickled object that would run code on load."""

    def __reduce__(self):
        return (print, ("owned",))


def test_round_trip(tmp_path):
    cfg = TrainConfig(model=SMALL, steps=7)
    g = Generator(SMALL)
    checkpoint.save(tmp_path / "c.pt", cfg, 3, {"generator": g.state_dict()})
    loaded, cfg2 = checkpoint.load_generator(tmp_path / "c.pt")
    assert cfg2 == cfg and checkpoint.load(tmp_path / "c.pt")["step"] == 3
    x = torch.rand(1, 12, 16, 16)
    assert torch.equal(loaded(x), g(x))
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "generator": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused: it holds pickled Python objects"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such checkpoint"),
        (b"garbage", "not a PyTorch checkpoint"),
        ({"weights": torch.zeros(1)}, "not an avg-rt checkpoint"),
    ],
)
def test_not_a_checkpoint(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message) as err:
        checkpoint.load(path)
    assert str(err.value).startswith(str(path))


def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError):
        checkpoint.load(path)


def test_generator_only_copy(tmp_path):
    from avg_rt.files import OutputExistsError

    cfg = TrainConfig(model=SMALL)
    g = Generator(SMALL)
    full = {"generator": g.state_dict(), "opt_g": {"state": {}, "param_groups": []}}
    checkpoint.save(tmp_path / "full.pt", cfg, 5, full)
    dst = checkpoint.save_networks(tmp_path / "full.pt", tmp_path / "g.pt")
    data = checkpoint.load(dst)
    assert set(data) == {"format", "version", "config", "step", "generator"} and data["step"] == 5
    with pytest.raises(OutputExistsError):
        checkpoint.save_networks(tmp_path / "full.pt", dst)
    with pytest.raises(CheckpointError, match="no discriminator"):
        checkpoint.save_networks(tmp_path / "full.pt", tmp_path / "gd.pt", discriminator=True)
    full["discriminator"] = Discriminator(SMALL).state_dict()
    checkpoint.save(tmp_path / "full.pt", cfg, 5, full)
    data = checkpoint.load(checkpoint.save_networks(tmp_path / "full.pt", tmp_path / "gd.pt", True))
    assert {"generator", "discriminator"} <= set(data) and "opt_g" not in data
    # The inference deadzone is set when shipping; a network it cannot apply to is refused.
    dst = checkpoint.save_networks(tmp_path / "full.pt", tmp_path / "dz.pt", deadzone=16)
    assert checkpoint.load(dst)["config"].model.deadzone == 16
    assert checkpoint.load_generator(dst)[0].cfg.deadzone == 16
    residual = dataclasses.replace(cfg, model=dataclasses.replace(SMALL, delta=False))
    checkpoint.save(
        tmp_path / "res.pt", residual, 5, {"generator": Generator(residual.model).state_dict()}
    )
    with pytest.raises(CheckpointError, match="inference options: deadzone needs the delta"):
        checkpoint.save_networks(tmp_path / "res.pt", tmp_path / "x.pt", deadzone=16)
    # So is a palette; it replaces no weight, and a wrong one is refused with the file's name.
    dst = checkpoint.save_networks(tmp_path / "full.pt", tmp_path / "pal.pt", palette=[[0, 9, 255]])
    assert checkpoint.load_generator(dst)[0].cfg.palette == ((0.0, 9.0, 255.0),)
    with pytest.raises(CheckpointError, match="full.pt.*palette colour"):
        checkpoint.save_networks(tmp_path / "full.pt", tmp_path / "y.pt", palette=[[0, 9]])
