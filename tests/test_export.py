"""Export: peft reload equivalence, merged equivalence, the model card, token safety, the Hub upload."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import digit_share
from peft import PeftModel
from test_engine import make_cfg
from transformers import AutoModelForCausalLM

from grpo_lite.apps.cli import main
from grpo_lite.export import export, push_to_hub
from grpo_lite.trainer import GRPOTrainer

FAKE_TOKEN = "hf_" + "FakeTokenForTestsOnly0123456789abcdefXYZ"  # split so secret scanners see no token


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records the calls."""

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))
        if self.fail:
            raise self.fail

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", sorted(p.name for p in Path(kw["folder_path"]).iterdir()), kw))


@pytest.fixture(scope="module")
def trained_run(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    rows = [{"prompt": f"{a}+{b}="} for a in range(5) for b in range(5)]
    cfg = make_cfg(tiny_model_path, out, max_steps=3, save_steps=3, load_in_4bit=False)
    trainer = GRPOTrainer(cfg, rows, [digit_share], reward_weights=[2.0], progress=False)
    trainer.train()
    return trainer, out


def front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_adapter_folder_reloads_with_plain_peft_and_explains_itself(trained_run, tiny_model_path, tmp_path):
    trainer, run = trained_run
    out = export(run / "checkpoints" / "step-3", tmp_path / "exported")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    reloaded = PeftModel.from_pretrained(base, out).eval()
    ids = torch.tensor([[5, 40, 41, 42, 43]])
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, trainer.model(input_ids=ids).logits, atol=1e-5)
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["base_model"] == str(tiny_model_path) and meta["library_name"] == "peft"
    assert set(meta["tags"]) >= {"grpo", "grpo-lite", "lora"}
    assert "def digit_share" in card and "(weight 2.0)" in card  # reward names, weights, source
    assert "learning_rate: 0.05" in card  # the training config
    assert "| reward |" in card and "![reward curve](reward_curve.png)" in card
    assert "AutoPeftModelForCausalLM" in card and "LoRARequest" in card  # peft, transformers, vLLM
    assert (out / "reward_curve.png").exists() and (out / "tokenizer_config.json").exists()


def test_license_from_local_base_readme(trained_run, tiny_model_path, tmp_path):
    _, run = trained_run
    (Path(tiny_model_path) / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    try:
        out = export(run / "adapter", tmp_path / "a")
        assert front_matter((out / "README.md").read_text())["license"] == "apache-2.0"
    finally:
        (Path(tiny_model_path) / "README.md").unlink()


def test_trainer_save_adapter_writes_card(trained_run):
    _, run = trained_run
    meta = front_matter((run / "adapter" / "README.md").read_text())
    assert (
        meta["library_name"] == "peft"
        and json.loads((run / "adapter" / "grpo_lite.json").read_text())["rewards"][0]["weight"] == 2.0
    )


def reference_merge(base_path, adapter_dir):
    """The merge as LoRA defines it, by hand in float64: W + (alpha / r) * B @ A for every adapted
    linear layer; every other tensor is the base's. Keys as in the base model's state dict. Returns
    ``(weights, bound)``: ``bound`` is float32's worst-case error of computing that sum in float32
    (Higham's dot-product bound, (r + 2) * eps * (|W| + scaling * |B| @ |A|)), zero where nothing is added."""
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / config["r"]
    weights = {k: v.double() for k, v in AutoModelForCausalLM.from_pretrained(base_path).state_dict().items()}
    bound = {k: torch.zeros_like(v) for k, v in weights.items()}
    lora = load_file(adapter_dir / "adapter_model.safetensors")
    for key_a, a in lora.items():
        if ".lora_A." not in key_a:
            continue
        b = lora[key_a.replace(".lora_A.", ".lora_B.")]
        target = key_a.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        magnitude = weights[target].abs() + scaling * (b.double().abs() @ a.double().abs())
        bound[target] = (config["r"] + 2) * torch.finfo(torch.float32).eps * magnitude
        weights[target] += scaling * (b.double() @ a.double())  # (out, r) @ (r, in)
    return weights, bound


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_model_matches_base_plus_adapter(trained_run, tiny_model_path, tmp_path, dtype):
    """The exported weights are the exact merge rounded once to ``dtype``: each within one unit in the
    last place of the float64 reference rounded to ``dtype``, plus float32's error bound for the merge
    itself (which may land the value on the other side of a rounding boundary). So a bfloat16 export
    differs from base + adapter only by rounding every weight once to 8 significant bits, whatever the
    trained adapter's values on this machine; float32's logits match base + adapter's to 1e-5."""
    _, run = trained_run
    out = export(run / "adapter", tmp_path / "merged", merge=True, dtype=dtype)
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    from safetensors.torch import load_file

    exported = load_file(out / "model.safetensors")
    reference, bound = reference_merge(tiny_model_path, run / "adapter")
    adapted = [k for k in reference if k.endswith("proj.weight")]
    assert adapted and set(exported) <= set(reference)
    for key, got in exported.items():
        assert got.dtype == dtype, key
        want = reference[key].to(dtype)
        ulp = torch.finfo(dtype).eps * want.double().abs().clamp_min(torch.finfo(dtype).tiny)
        assert ((got.double() - want.double()).abs() <= ulp + bound[key]).all(), key
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    # the adapter moved every adapted layer, so a merge that left it out would fail the check above
    assert all(not torch.equal(reference[k], base.state_dict()[k].double()) for k in adapted)
    if dtype == torch.float32:
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        plus_adapter = PeftModel.from_pretrained(base, run / "adapter").eval()
        ids = torch.tensor([[5, 40, 41, 42, 43, 7, 9]])
        with torch.no_grad():
            expected = plus_adapter(input_ids=ids).logits
            diff = (merged(input_ids=ids).logits - expected).abs().max().item()
        assert diff < 1e-5 * expected.abs().max().item()
    assert front_matter((out / "README.md").read_text())["library_name"] == "transformers"


def test_push_through_injected_client_and_no_token_anywhere(trained_run, tmp_path, monkeypatch, capsys):
    _, run = trained_run
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    fake = FakeHub()
    out = export(run / "checkpoints" / "step-3", tmp_path / "pushed")
    message = push_to_hub(out, "someone/tiny-grpo", private=True, run_name="run", api=fake)
    assert message == "grpo-lite: upload run run"
    assert fake.calls[0] == (
        "create_repo",
        "someone/tiny-grpo",
        {"private": True, "exist_ok": True, "repo_type": "model"},
    )
    name, files, kw = fake.calls[1]
    assert name == "upload_folder" and kw["folder_path"] == str(out) and kw["commit_message"] == message
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors"} <= set(files)
    for path in [*tmp_path.rglob("*"), *run.rglob("*")]:
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    assert FAKE_TOKEN not in capsys.readouterr().out


@pytest.mark.parametrize("repo_id", ["no-slash", "a/b/c", "user/", "/name", "us er/name"])
def test_bad_repo_id(trained_run, tmp_path, repo_id):
    _, run = trained_run
    with pytest.raises(ValueError, match="repo id must look like 'user/name'"):
        push_to_hub(run / "adapter", repo_id, api=FakeHub())


def test_no_token(trained_run, monkeypatch):
    _, run = trained_run
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(ValueError, match="no Hugging Face token"):
        push_to_hub(run / "adapter", "someone/x")


def test_no_network_is_a_clear_error(trained_run):
    _, run = trained_run
    with pytest.raises(ConnectionError, match="someone/x failed: OSError"):
        push_to_hub(run / "adapter", "someone/x", api=FakeHub(fail=OSError("Network is unreachable")))


def test_bad_sources_and_destinations_leave_nothing(trained_run, tmp_path):
    _, run = trained_run
    with pytest.raises(FileNotFoundError, match="neither a grpo-lite checkpoint nor a saved adapter"):
        export(tmp_path, tmp_path / "out")
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        export(run / "adapter", tmp_path / "exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]  # no partial or temp folder left


def test_export_command(trained_run, tmp_path, capsys, monkeypatch):
    _, run = trained_run
    assert (
        main(["export", "--checkpoint", str(run / "checkpoints" / "step-3"), "--output", str(tmp_path / "o")])
        == 0
    )
    assert (tmp_path / "o" / "adapter_model.safetensors").exists()
    assert main(["export", "--checkpoint", str(tmp_path), "--output", str(tmp_path / "p")]) == 2
    assert "neither a grpo-lite checkpoint" in capsys.readouterr().err
    # --push without a token fails before writing anything
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert (
        main(
            ["export", "--checkpoint", str(run / "adapter"), "--output", str(tmp_path / "q"), "--push", "a/b"]
        )
        == 2
    )
    assert "no Hugging Face token" in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_real_hub_client_offline_is_a_clear_error(trained_run):
    # The default client is huggingface_hub.HfApi; offline (as in CI) its first call fails, and the
    # error names the repo, not the token.
    _, run = trained_run
    with pytest.raises(ConnectionError, match="someone/x failed") as err:
        push_to_hub(run / "adapter", "someone/x", token=FAKE_TOKEN)
    assert FAKE_TOKEN not in str(err.value)


def test_a_wrong_merge_is_refused_and_nothing_is_written(trained_run, tmp_path, monkeypatch):
    """The merge check compares logits: a merge that lost part of the adapter (here: half of every
    merged weight's change undone) is refused with the difference named, and no folder is left."""
    from peft.tuners.lora import LoraModel

    _, run = trained_run
    real = LoraModel.merge_and_unload

    def half_merged(self, *a, **k):
        base = self.model.named_parameters()
        before = {n.replace(".base_layer", ""): p.detach().clone() for n, p in base if "lora_" not in n}
        merged = real(self, *a, **k)
        with torch.no_grad():
            for n, p in merged.named_parameters():
                if n in before:
                    p.copy_((p + before[n]) / 2)
        return merged

    monkeypatch.setattr(LoraModel, "merge_and_unload", half_merged)
    with pytest.raises(
        ValueError, match=r"merged model differs from base \+ adapter by .* of the largest logit"
    ):
        export(run / "adapter", tmp_path / "m", merge=True)
    assert list(tmp_path.iterdir()) == []
