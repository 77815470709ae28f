"""Text fixtures: real SST-2 sentences written in every supported format, a tiny random BERT."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import SHARED_DATA

SST2 = SHARED_DATA / "SST-2"
SMS = SHARED_DATA / "smsspamcollection" / "SMSSpamCollection"


def needs_sst2():
    return pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"real SST-2 data not found at {SST2}")


def needs_sms():
    return pytest.mark.skipif(not SMS.is_file(), reason=f"real SMS spam data not found at {SMS}")


def read_sst2(name: str = "train.tsv", n: int | None = None) -> list[tuple[str, int]]:
    """(sentence, label) rows of an SST-2 file, read with the csv module (independent of sftune)."""
    path = SST2 / name
    if not path.is_file():
        pytest.skip(f"real SST-2 data not found at {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        rows = [(sentence, int(label)) for sentence, label in reader]
    return rows[:n] if n else rows


def write_tsv(path: Path, rows, header: str = "sentence\tlabel") -> Path:
    """``rows`` of (text, label) as a TSV file with ``header``."""
    path.write_text(header + "\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sst_rows() -> list[tuple[str, int]]:
    """The first 60 SST-2 training sentences (real text, both classes)."""
    return read_sst2("train.tsv", 60)


@pytest.fixture(scope="session")
def sst_files(tmp_path_factory, sst_rows) -> dict[str, Path]:
    """The same 60 rows as CSV, TSV, JSONL, JSON, Parquet and a saved HF Dataset."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("sst_formats")
    out: dict[str, Path] = {}
    out["csv"] = root / "sst.csv"
    with out["csv"].open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sentence", "label"])
        w.writerows(sst_rows)
    out["tsv"] = root / "sst.tsv"
    out["tsv"].write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in sst_rows), encoding="utf-8")
    out["jsonl"] = root / "sst.jsonl"
    out["jsonl"].write_text("".join(json.dumps({"sentence": s, "label": y}) + "\n" for s, y in sst_rows))
    out["json"] = root / "sst.json"
    out["json"].write_text(json.dumps([{"sentence": s, "label": y} for s, y in sst_rows]))
    out["parquet"] = root / "sst.parquet"
    pq.write_table(pa.table({"sentence": [s for s, _ in sst_rows], "label": [y for _, y in sst_rows]}), out["parquet"])
    out["hf"] = root / "sst_hf"
    datasets.Dataset.from_dict({"sentence": [s for s, _ in sst_rows], "label": [y for _, y in sst_rows]}).save_to_disk(
        str(out["hf"]))
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) saved with MiniLM's tokenizer: loads as hf:<dir>."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from sftune.backbones.text import ZOO_TEXT

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(ZOO_TEXT.get("minilm").folder(), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny(tiny_bert_dir) -> list[str]:
    """CLI flags for a fast text run on the tiny random BERT."""
    return ["--model", f"hf:{tiny_bert_dir}", "--set", "model.pretrained=false", "--no-progress",
            "--accelerator", "cpu", "--batch-size", "32"]


@pytest.fixture(scope="session")
def minilm():
    """The packaged MiniLM-L6 encoder, in eval mode (read-only for tests)."""
    from sftune.backbones.text import create_text_backbone

    return create_text_backbone("minilm").eval()
