"""Text encoders (offline MiniLM, hf:<folder>, hub names without network) and the batch collator."""

from __future__ import annotations

import time

import pytest
import torch

from sftune.backbones.text import (
    ZOO_TEXT,
    TextBackbone,
    create_text_backbone,
    is_text_model_name,
    text_backbone_from_folder,
)
from sftune.data.text_batches import TextCollator, TextDataset
from sftune.data.texts import TextSample
from sftune.errors import SftuneError


def _encode(backbone: TextBackbone, texts: list[str]) -> torch.Tensor:
    batch = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return backbone(dict(batch))


# ------------------------------------------------------------------------------- MiniLM


def test_minilm_loads_offline_with_mean_pooling(minilm):
    assert ZOO_TEXT.list() == ["minilm"]
    assert minilm.arch == "bert" and minilm.pooling == "mean" and minilm.num_features == 384
    assert not any("pooler" in n for n, _ in minilm.model.named_parameters())  # unused by mean pooling: dropped
    assert _encode(minilm, ["a great movie", "an excellent film", "the stock market fell"]).shape == (3, 384)


def test_minilm_knows_that_paraphrases_are_close(minilm):
    f = torch.nn.functional.normalize(_encode(minilm, ["a great movie", "an excellent film", "the stock market fell"]))
    # Measured: 0.86 for the paraphrase, 0.11 for the unrelated sentence; random weights give ~equal values.
    assert f[0] @ f[1] > f[0] @ f[2] + 0.3


def test_mean_pooling_ignores_padding(minilm):
    alone = _encode(minilm, ["a great movie"])
    padded = _encode(minilm, ["a great movie", "a much longer sentence that forces plenty of padding onto the first one"])
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_layer_groups_cover_every_parameter_once_input_to_output(minilm):
    groups = minilm.layer_groups()
    names = [n for g in groups for n in g]
    assert sorted(names) == sorted(n for n, _ in minilm.model.named_parameters()) and len(names) == len(set(names))
    assert len(groups) == 7  # embeddings + 6 transformer layers
    assert all(n.startswith("embeddings.") for n in groups[0])
    for i, group in enumerate(groups[1:]):
        assert all(n.startswith(f"encoder.layer.{i}.") for n in group)


def test_layer_groups_for_distilbert_layout(tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer, DistilBertConfig

    model = AutoModel.from_config(DistilBertConfig(vocab_size=100, dim=16, n_layers=3, n_heads=2, hidden_dim=20))
    backbone = TextBackbone(model, AutoTokenizer.from_pretrained(tiny_bert_dir), source="test", pooling="cls")
    groups = backbone.layer_groups()
    assert len(groups) == 4 and all("embeddings" in n for n in groups[0])
    assert all(n.startswith("transformer.layer.2.") for n in groups[-1])
    batch = {"input_ids": torch.tensor([[1, 5, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "token_type_ids": torch.zeros(1, 3, dtype=torch.long)}  # DistilBERT has no token types: filtered out
    assert backbone(batch).shape == (1, 16)


def test_save_pretrained_rebuilds_offline_and_reloads_weights(minilm, tmp_path):
    minilm.save_pretrained(tmp_path / "enc")
    assert not list((tmp_path / "enc").glob("*.safetensors"))  # config + tokenizer only: weights live elsewhere
    rebuilt = text_backbone_from_folder(tmp_path / "enc", pooling="mean").eval()
    texts = ["a great movie", "the stock market fell sharply today"]
    assert not torch.allclose(_encode(rebuilt, texts), _encode(minilm, texts))  # random init before loading
    rebuilt.load_weights(minilm.weights(), origin="test")
    assert torch.equal(_encode(rebuilt, texts), _encode(minilm, texts))
    assert rebuilt.tokenizer(texts)["input_ids"] == minilm.tokenizer(texts)["input_ids"]


def test_load_weights_reports_missing_tensors(minilm, tiny_bert_dir):
    tiny = create_text_backbone(f"hf:{tiny_bert_dir}")
    state = {k: v for k, v in tiny.weights().items() if "layer.1." not in k}
    with pytest.raises(SftuneError, match="missing .* tensors"):
        tiny.load_weights(state, origin="run/model.safetensors")
    with pytest.raises(SftuneError, match="run/model.safetensors"):
        tiny.load_weights(minilm.weights(), origin="run/model.safetensors")  # 384-wide into 32-wide


# ----------------------------------------------------------------------------- hf: names


def test_hf_local_folder(tiny_bert_dir):
    from safetensors.torch import load_file

    backbone = create_text_backbone(f"hf:{tiny_bert_dir}")
    assert backbone.num_features == 32 and backbone.pooling == "cls" and backbone.source == f"hf:{tiny_bert_dir}"
    saved = load_file(str(tiny_bert_dir / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in backbone.weights().items())
    random_init = create_text_backbone(f"hf:{tiny_bert_dir}", pretrained=False, pooling="mean")
    assert random_init.pooling == "mean"
    assert not torch.equal(random_init.weights()["encoder.layer.0.output.dense.weight"],
                           saved["encoder.layer.0.output.dense.weight"])


def test_hub_name_in_the_local_cache_loads_offline(tiny_bert_dir, tmp_path, monkeypatch):
    """A hub id found in the HF cache loads without network; its 1_Pooling/ config picks mean pooling."""
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--sftune-test--tiny-st"
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(tiny_bert_dir, snapshot)
    (snapshot / "1_Pooling").mkdir()
    (snapshot / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    backbone = create_text_backbone("hf:sftune-test/tiny-st")
    assert backbone.num_features == 32 and backbone.pooling == "mean" and backbone.source == "hf:sftune-test/tiny-st"


def test_hub_name_not_cached_fails_fast_offline():
    start = time.perf_counter()
    with pytest.raises(SftuneError) as info:
        create_text_backbone("hf:bert-base-uncased")
    message = str(info.value)
    assert time.perf_counter() - start < 5
    assert "\n" not in message and "hf:bert-base-uncased" in message and "local Hugging Face cache" in message
    assert "hf:<local folder>" in message


def test_hub_name_unreachable_hub_fails_fast(monkeypatch):
    """Online mode but no route to the hub: the 3 s probe, not the hub client's retries, decides."""
    import socket

    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(SftuneError, match="hub cannot be reached"):
        create_text_backbone("hf:bert-base-uncased")


def test_bad_names(tmp_path):
    with pytest.raises(SftuneError, match="did you mean 'minilm'"):
        create_text_backbone("minlm")
    with pytest.raises(SftuneError, match="does not exist"):
        create_text_backbone(f"hf:{tmp_path}/missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SftuneError, match="config.json"):
        create_text_backbone(f"hf:{empty}")
    with pytest.raises(SftuneError, match="pooling"):
        create_text_backbone("minilm", pooling="max")
    assert is_text_model_name("minilm") and is_text_model_name("hf:bert-base-uncased")
    assert not is_text_model_name("efficientnet_lite0") and not is_text_model_name("timm:resnet18")


# --------------------------------------------------------------------------- collator


def test_collator_pads_to_the_longest_text_in_the_batch(minilm):
    classes = {"neg": 0, "pos": 1}
    samples = [TextSample("a great movie", "pos"), TextSample("dull", "neg"), TextSample("unlabeled text", "")]
    ds = TextDataset(samples, classes)
    assert ds[0] == ("a great movie", None, 1) and ds[2][2] == -1
    inputs, targets = TextCollator(minilm.tokenizer, max_length=64)([ds[0], ds[1], ds[2]])
    assert set(inputs) >= {"input_ids", "attention_mask"}
    lengths = [len(minilm.tokenizer(s.text)["input_ids"]) for s in samples]  # with [CLS] ... [SEP]
    assert lengths == [5, 3, 7]  # "unlabeled" is three word pieces
    assert inputs["input_ids"].shape == (3, max(lengths))  # padded to this batch's longest, not to max_length
    assert inputs["attention_mask"].sum(1).tolist() == lengths
    assert targets.dtype == torch.long and targets.tolist() == [1, 0, -1]
    assert minilm(inputs).shape == (3, 384)


def test_collator_truncates_and_handles_pairs_and_multi_label(minilm):
    long_text = "a remarkably long review " * 40
    inputs, _ = TextCollator(minilm.tokenizer, max_length=16)([(long_text, None, 0), ("short", None, 1)])
    assert inputs["input_ids"].shape == (2, 16)
    left, _ = TextCollator(minilm.tokenizer, max_length=8, truncation_side="left")([("one two three four five six seven "
                                                                                    "eight nine ten", None, 0)])
    assert minilm.tokenizer.decode(left["input_ids"][0], skip_special_tokens=True).endswith("nine ten")
    assert minilm.tokenizer.truncation_side == "right"  # the shared tokenizer is left as it was

    pairs = TextDataset([TextSample("the cat sat", "yes", "a cat was sitting"), TextSample("rain", "no", "sunshine")],
                        {"no": 0, "yes": 1})
    inputs, targets = TextCollator(minilm.tokenizer)([pairs[0], pairs[1]])
    assert inputs["token_type_ids"][0].max() == 1  # second sentence marked as segment 1
    assert targets.tolist() == [1, 0]

    multi = TextDataset([TextSample("x", ("a", "c")), TextSample("y", ()), TextSample("z", ("b", "new"))],
                        {"a": 0, "b": 1, "c": 2}, multi_label=True)
    _, targets = TextCollator(minilm.tokenizer)([multi[0], multi[1], multi[2]])
    assert targets.dtype == torch.float32
    assert targets.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
