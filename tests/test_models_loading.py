"""load_clip: offline failure message, random init, local files (safetensors, torch, TorchScript), QuickGELU."""

import os
import sys
import types

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from glad.models import WeightsUnavailableError, load_clip
from glad.models.loading import offline_enabled, read_state_dict, set_offline
from glad.models.testing import tiny_clip_config

TINY = "glad-models-test-tiny"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    import json

    path = tmp_path_factory.mktemp("configs") / f"{TINY}.json"
    path.write_text(json.dumps(tiny_clip_config()))
    open_clip.add_model_config(path)
    return TINY


def _activation(model):
    return type(model.visual.transformer.resblocks[0].mlp.gelu)


def _source_weights(seed=5, quick_gelu=False):
    torch.manual_seed(seed)
    return open_clip.CLIP(**tiny_clip_config(quick_gelu=quick_gelu)).eval()


def _assert_same_weights(model, source):
    got, want = model.state_dict(), source.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_offline_missing_weights_give_one_clear_error(tmp_path):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest: no test touches the network
    with pytest.raises(WeightsUnavailableError) as info:
        load_clip("ViT-B-16", "openai", cache_dir=str(tmp_path), device="cpu")
    msg = str(info.value)
    assert "'openai'" in msg and "ViT-B-16" in msg
    assert str(tmp_path) in msg
    assert "offline mode: on" in msg
    assert "--pretrained none" in msg and "glad-tiny" in msg and "--pretrained /path/to" in msg
    assert isinstance(info.value, RuntimeError)


def test_hf_hub_weights_offline(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="hf-hub:someone/nothing"):
        load_clip("ViT-B-16", "hf-hub:someone/nothing", cache_dir=str(tmp_path), device="cpu")


def test_hf_hub_model_offline(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="hf-hub:someone/nothing") as info:
        load_clip("hf-hub:someone/nothing", None, cache_dir=str(tmp_path), device="cpu")
    assert str(tmp_path) in str(info.value)


def test_random_init(tiny_name):
    model, pre_train, pre_val, tokenizer = load_clip(tiny_name, None, device="cpu")
    assert isinstance(model, open_clip.CLIP) and not model.training
    assert tokenizer(["a cat"]).shape == (1, 16)
    from PIL import Image

    image = Image.new("RGB", (40, 50), (200, 10, 10))
    assert pre_val(image).shape == (3, 32, 32) and pre_train(image).shape == (3, 32, 32)
    for none in ("none", "None", ""):
        assert load_clip(tiny_name, none, device="cpu")[0].visual.output_dim == 32


@pytest.mark.parametrize("kind", ["safetensors", "torch", "torch-wrapped"])
def test_local_files(tiny_name, tmp_path, kind):
    source = _source_weights()
    sd = source.state_dict()
    if kind == "safetensors":
        path = tmp_path / "tiny.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif kind == "torch":
        path = tmp_path / "tiny.pt"
        torch.save(sd, path)
    else:  # a training checkpoint: {"state_dict": {"module.<key>": ...}}
        path = tmp_path / "epoch_3.pt"
        torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    model = load_clip(tiny_name, str(path), device="cpu")[0]
    _assert_same_weights(model, source)
    assert _activation(model) is torch.nn.GELU


def test_torch_files_are_read_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": types.SimpleNamespace(a=1)}, path)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        read_state_dict(str(path))


def test_openai_files_get_quick_gelu(tiny_name, tmp_path):
    source = _source_weights(quick_gelu=True)
    path = tmp_path / "tiny-openai.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = load_clip(tiny_name, str(path), device="cpu")[0]
    assert _activation(model) is QuickGELU
    _assert_same_weights(model, source)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(x), source.encode_image(x))
    # explicit choice wins
    assert _activation(load_clip(tiny_name, str(path), device="cpu", quick_gelu=False)[0]) is torch.nn.GELU
    assert _activation(load_clip(tiny_name, None, device="cpu", quick_gelu=True)[0]) is QuickGELU


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_openai_torchscript_archive(tiny_name, tmp_path):
    # OpenAI's released .pt files are TorchScript archives
    source = _source_weights(quick_gelu=True)
    path = tmp_path / "tiny.pt"
    torch.jit.script(source).save(str(path))
    model = load_clip(tiny_name, str(path), device="cpu")[0]
    assert _activation(model) is QuickGELU
    _assert_same_weights(model, source)


def test_wrong_architecture_file(tiny_name, tmp_path):
    path = tmp_path / "other.safetensors"
    other = open_clip.CLIP(**tiny_clip_config(vision_cfg={"width": 32}))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="do not fit"):
        load_clip(tiny_name, str(path), device="cpu")


def test_bad_names(tiny_name, tmp_path):
    with pytest.raises(ValueError, match="did you mean.*ViT-B-16"):
        load_clip("ViT-B-61", None)
    with pytest.raises(ValueError, match="known tags:.*openai"):
        load_clip("ViT-B-16", "opneai")
    missing = str(tmp_path / "nope" / "ViT-B-16.safetensors")
    with pytest.raises(WeightsUnavailableError, match="no such file") as info:
        load_clip(tiny_name, missing)
    assert missing in str(info.value) and "--pretrained none" in str(info.value)


def test_glad_tiny_is_delegated_lazily(monkeypatch):
    calls = []
    fake = types.ModuleType("glad.world.tiny")
    fake.load_glad_tiny = lambda **kw: calls.append(kw) or ("model", "train", "val", "tok")
    monkeypatch.setitem(sys.modules, "glad.world.tiny", fake)
    assert load_clip("glad-tiny", "world", cache_dir="/c", device="cpu") == ("model", "train", "val", "tok")
    assert calls == [{"pretrained": "world", "cache_dir": "/c", "device": "cpu"}]


def test_offline_flag(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not offline_enabled()
    set_offline(True)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
    assert offline_enabled()


def _save_tiny(path, quick_gelu=True, extra=None):
    source = _source_weights(quick_gelu=quick_gelu)
    sd = {k: v.contiguous() for k, v in source.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if str(path).endswith(".safetensors"):
        save_file(sd, str(path))
    else:
        torch.save({**sd, **(extra or {})}, path)
    return source


def test_openai_origin_from_the_whole_path(tiny_name, tmp_path):
    # open_clip's own cache names the tag in a folder, not in the file name
    path = tmp_path / "models--timm--tiny.openai" / "snapshots" / "abc" / "open_clip_model.safetensors"
    _save_tiny(path)
    assert _activation(load_clip(tiny_name, str(path), device="cpu")[0]) is QuickGELU


def test_openai_origin_from_the_checkpoint_keys(tiny_name, tmp_path):
    path = tmp_path / "weights" / "clip-state.pt"
    scalars = {"input_resolution": torch.tensor(32), "context_length": torch.tensor(77),
               "vocab_size": torch.tensor(49408)}
    source = _save_tiny(path, extra=scalars)
    model = load_clip(tiny_name, str(path), device="cpu")[0]
    assert _activation(model) is QuickGELU
    _assert_same_weights(model, source)


def test_config_beside_the_weights_decides(tiny_name, tmp_path):
    import json

    path = tmp_path / "openai-named" / "open_clip_model.safetensors"
    _save_tiny(path, quick_gelu=False)
    (path.parent / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": False}}))
    assert _activation(load_clip(tiny_name, str(path), device="cpu")[0]) is torch.nn.GELU


def test_undetermined_file_warns_and_uses_gelu(tiny_name, tmp_path, caplog):
    path = tmp_path / "weights" / "mystery.safetensors"
    _save_tiny(path, quick_gelu=False)
    with caplog.at_level("WARNING", logger="glad"):
        model = load_clip(tiny_name, str(path), device="cpu")[0]
    assert _activation(model) is torch.nn.GELU
    assert [r for r in caplog.records if "--quick-gelu" in r.getMessage()]
    caplog.clear()
    with caplog.at_level("WARNING", logger="glad"):
        assert _activation(load_clip(tiny_name, str(path), device="cpu", quick_gelu=True)[0]) is QuickGELU
    assert not [r for r in caplog.records if r.name == "glad"]  # an explicit choice needs no guess


@pytest.mark.slow
@pytest.mark.parametrize("which", ["hf_weights", "state_dict_file"])
def test_vitb16_openai_files_build_quick_gelu_everywhere(user_home, which):
    from glad.models import uses_quick_gelu

    model = load_clip("ViT-B-16", str(getattr(user_home, which)), device="cpu")[0]
    blocks = [*model.visual.transformer.resblocks, *model.transformer.resblocks]
    assert len(blocks) == 24 and all(type(b.mlp.gelu) is QuickGELU for b in blocks)
    assert not any(isinstance(m, torch.nn.GELU) for m in model.modules()) and uses_quick_gelu(model)


def test_no_network_fails_in_seconds_and_says_why(tmp_path, monkeypatch, caplog):
    # Without a network huggingface_hub retries each file with backoff (about a minute); glad
    # asks once whether the hub can be reached and then reads the cache only, saying so.
    import socket
    import time

    import huggingface_hub.constants as constants

    import glad.models.loading as loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(loading, "_no_network", None)
    asked = []

    def no_route(address, timeout=None):
        asked.append((address, timeout))
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_route)
    start = time.perf_counter()
    with caplog.at_level("WARNING", logger="glad"), pytest.raises(WeightsUnavailableError) as info:
        load_clip("ViT-B-16", "openai", cache_dir=str(tmp_path), device="cpu")
    assert time.perf_counter() - start < 20
    assert asked == [(("huggingface.co", 443), loading._REACH_TIMEOUT_S)]
    assert "offline mode: on (no network: huggingface.co:443 cannot be reached" in str(info.value)
    assert [r.message for r in caplog.records if "no network" in r.message] == [
        "no network (huggingface.co:443 cannot be reached (Name or service not known)): reading the local "
        "cache only, as with --offline"]
    assert not offline_enabled()  # the process's own setting is back after the call
    with pytest.raises(WeightsUnavailableError, match="no network"):  # not asked twice a process
        load_clip("ViT-B-16", "openai", cache_dir=str(tmp_path), device="cpu")
    assert len(asked) == 1 and not offline_enabled()


def test_library_calls_leave_the_process_offline_setting_alone(monkeypatch, tmp_path):
    """load_clip(offline=True) and an adapter by Hub id, refused or not, switch the hub off for
    their own call only: the user's other Hugging Face code downloads as before."""
    import huggingface_hub.constants as constants

    from glad.engine.use import resolve_adapter

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    load_clip("ViT-B-16", None, device="cpu", offline=True)
    with pytest.raises(WeightsUnavailableError):
        load_clip("ViT-B-16", "openai", cache_dir=str(tmp_path), device="cpu", offline=True)
    with pytest.raises(WeightsUnavailableError):
        resolve_adapter("hf-hub:nobody/nothing", cache_dir=str(tmp_path), offline=True)
    assert "HF_HUB_OFFLINE" not in os.environ and constants.HF_HUB_OFFLINE is False


def test_a_reachable_hub_is_left_to_download(monkeypatch):
    import socket

    import huggingface_hub.constants as constants

    import glad.models.loading as loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    class Open:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: Open())
    loading.offline_unless_reachable()
    assert not offline_enabled()
    assert loading.unreachable("http://mirror.example:8080/x") is None
