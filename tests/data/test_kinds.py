"""Data beyond labeled tensors: Planetoid graphs, token sequences and label budgets flow through data.build,
models.build and the batch contract."""
from pathlib import Path

import pytest
import torch

import kdforge
import kdforge.models as models
from kdforge.api import build_data
from kdforge.config.schema import AugmentConfig, DataConfig
from kdforge.data import AugmentSettings, BatchIterator, build, iter_eval
from kdforge.data.sources import planetoid, text
from kdforge.data.types import PAD_ID, UNK_ID
from kdforge.errors import ConfigError, DataError
from kdforge.models import ModelSpec


@pytest.fixture(scope="module")
def cora(data_root):
    if not (data_root / "planetoid" / "raw" / "ind.cora.x").exists():
        pytest.skip("Planetoid files absent")
    return build_data(DataConfig(name="cora"))


@pytest.mark.parametrize("prefix", ["cora", "citeseer"])
def test_planetoid_equals_torch_geometric(data_root, prefix):
    from torch_geometric.io import read_planetoid_data  # the oracle, used only here

    raw = data_root / "planetoid" / "raw"
    graph, train, val, test = planetoid.assemble(planetoid.read_raw(raw, prefix), prefix)
    ref = read_planetoid_data(str(raw), prefix)
    assert torch.equal(graph.x, ref.x) and torch.equal(graph.y, ref.y)
    assert torch.equal(graph.edge_index, ref.edge_index)
    for ours, mask in ((train, ref.train_mask), (val, ref.val_mask), (test, ref.test_mask)):
        assert torch.equal(ours.sort()[0], mask.nonzero().view(-1))


def test_cora_public_split_and_spec(cora):
    assert cora.spec.kind == "graph" and cora.spec.input_shape == (1433,) and cora.spec.num_classes == 7
    assert cora.spec.num_nodes == 2708 and (len(cora.train), len(cora.val), len(cora.test)) == (140, 500, 1000)
    assert torch.equal(cora.train.y.bincount(), torch.full((7,), 20))
    assert torch.allclose(cora.train.graph.x.sum(1)[cora.train.graph.x.sum(1) > 0], torch.tensor(1.0))
    assert cora.train.graph is cora.test.graph  # one graph shared by every split


def test_random_split_counts_and_seed(data_root, cora):
    a = build_data(DataConfig(name="cora", params={"split": "random", "num_per_class": 5, "seed": 1}))
    b = build_data(DataConfig(name="cora", params={"split": "random", "num_per_class": 5, "seed": 2}))
    assert torch.equal(a.train.y.bincount(), torch.full((7,), 5)) and (len(a.val), len(a.test)) == (500, 1000)
    nodes = torch.cat([a.train.x, a.val.x, a.test.x])
    assert len(nodes.unique()) == len(nodes)  # disjoint
    assert not torch.equal(a.train.x, b.train.x)


def test_graph_models_and_batches_give_logits_of_the_batch_nodes(cora):
    torch.manual_seed(0)
    for name in ("gcn", "sage", "gat", "mlp"):  # an MLP student on node features ignores the edges (GLNN)
        model = models.build(ModelSpec(name=name), cora.spec).eval()
        batch = next(BatchIterator(cora.train, 32, 7, AugmentSettings(), seed=0).epoch(0))
        assert batch.forward(model).shape == (32, 7) and torch.equal(batch.y, cora.train.y[batch.index])
        (whole,) = list(iter_eval(cora.val, 100))  # a graph is one evaluation batch
        assert whole.forward(model).shape == (500, 7)


def test_graph_and_tokens_refuse_augmentation_and_val_fraction(cora, data_root):
    with pytest.raises(ConfigError, match="data.augment.flip applies to float tensors; graph data"):
        build_data(DataConfig(name="cora", augment=AugmentConfig(flip=True)))
    with pytest.raises(ConfigError, match="data.val_fraction does not apply to sst2"):
        build_data(DataConfig(name="sst2", val_fraction=0.2))


@pytest.mark.slow
def test_gcn_on_cora_from_its_config(tmp_path, cora):
    cfg = kdforge.load_config(Path(__file__).parents[2] / "configs" / "cora_ce.yaml",
                              [f"output_dir={tmp_path}", "train.epochs=100"])
    summary = kdforge.run(cfg)
    assert summary["test"]["top1"] > 0.75  # Kipf & Welling report 81.5 % at 200 epochs


@pytest.fixture(scope="module")
def sst2(data_root):
    if not (data_root / "sst2" / "stsa.binary.train").exists():
        pytest.skip("SST-2 files absent")
    return build_data(DataConfig(name="sst2", params={"max_len": 30}))


def test_sst2_tokens_vocab_from_train_only(sst2, data_root):
    assert sst2.spec.kind == "tokens" and sst2.spec.input_shape == (30,)
    assert (len(sst2.train), len(sst2.val), len(sst2.test)) == (6920, 872, 1821)
    assert sst2.train.x.dtype == torch.long and int(sst2.train.x.max()) < sst2.spec.vocab_size
    texts, _ = text.read_lines(data_root / "sst2" / "stsa.binary.test", 2, "utf-8")
    train_words = {w for t in text.read_lines(data_root / "sst2" / "stsa.binary.train", 2, "utf-8")[0] for w in t}
    unseen = sum(w not in train_words for t in texts for w in t[:30])
    assert int((sst2.test.x == UNK_ID).sum()) == unseen > 0  # test-only words are unknown: no leak
    assert (sst2.train.x[:, 0] != PAD_ID).all()


@pytest.mark.parametrize("name", ["textcnn", "bow"])
def test_text_models_on_token_batches(sst2, name):
    model = models.build(ModelSpec(name=name), sst2.spec)
    batch = next(BatchIterator(sst2.train, 16, 2, AugmentSettings(), seed=0).epoch(0))
    assert batch.forward(model).shape == (16, 2)


def test_trec_has_six_classes_and_a_carved_validation_split(data_root):
    if not (data_root / "trec" / "TREC.train.all").exists():
        pytest.skip("TREC files absent")
    trec = build_data(DataConfig(name="trec", val_fraction=0.1))
    assert trec.spec.num_classes == 6 and (len(trec.train), len(trec.val), len(trec.test)) == (4907, 545, 500)


def test_malformed_text_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1 fine sentence\n7 label out of range\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected '<label 0-1> <text>'"):
        text.read_lines(path, 2, "utf-8")


def test_pubmed_says_its_files_are_absent(tmp_path):
    with pytest.raises(DataError, match="not in the data snapshot"):
        planetoid.read_raw(tmp_path, "pubmed")


# ---- label budget --------------------------------------------------------------------------------------------
def test_label_budget_is_stratified_exact_disjoint_and_seeded():
    full = build_data(DataConfig(name="digits"))
    a = build_data(DataConfig(name="digits", label_budget={"labeled": 0.1, "seed": 0}))
    assert len(a.train) == round(0.1 * len(full.train)) and len(a.train) + len(a.unlabeled) == len(full.train)
    assert a.unlabeled.y is None and a.unlabeled.labeled is False
    per_class = a.train.y.bincount().float() / full.train.y.bincount().float()
    assert (per_class - 0.1).abs().max() < 0.05
    labeled, unlabeled = set(a.splits["labeled"]), set(a.splits["unlabeled"])
    assert not labeled & unlabeled and labeled | unlabeled == set(a.splits["train"])
    # positions refer to the source's training split: the hidden labels are the true ones
    assert torch.equal(a.unlabeled.hidden_y, full.train.y.new_tensor(
        [int(y) for y in build_data(DataConfig(name="digits", val_fraction=0)).train.y[a.splits["unlabeled"]]]))
    again = build_data(DataConfig(name="digits", label_budget={"labeled": 0.1, "seed": 0}))
    other = build_data(DataConfig(name="digits", label_budget={"labeled": 0.1, "seed": 1}))
    assert again.splits["labeled"] == a.splits["labeled"] and other.splits["labeled"] != a.splits["labeled"]
    assert torch.equal(a.val.x, full.val.x)  # validation is cut first and does not move


def test_label_budget_as_a_count_and_its_errors():
    assert len(build_data(DataConfig(name="digits", label_budget={"labeled": 50})).train) == 50
    with pytest.raises(ConfigError, match=r"data.label_budget.labeled=5.0 leaves class\(es\) \[.*\] without"):
        build_data(DataConfig(name="digits", label_budget={"labeled": 5}))
    with pytest.raises(ConfigError, match="fraction below 1 or a whole count"):
        build_data(DataConfig(name="digits", label_budget={"labeled": 20.5}))
    with pytest.raises(ConfigError, match="leaves no labeled or no unlabeled"):
        build_data(DataConfig(name="digits", label_budget={"labeled": 100000}))


def test_label_budget_is_saved_with_the_run(tmp_path):
    import json

    cfg = kdforge.load_config(Path(__file__).parents[2] / "configs" / "digits_ce.yaml", [
        "data.label_budget.labeled=0.2", "train.epochs=1", f"output_dir={tmp_path}"])
    kdforge.run(cfg)
    saved = json.loads((tmp_path / "data_splits.json").read_text())
    assert saved["labeled"] == build_data(cfg.data).splits["labeled"] and saved["label_budget"]["labeled"] == 0.2


def test_planetoid_files_listed_in_sha256sums_load_and_tampered_ones_do_not(data_root, tmp_path):
    """A data set outside the pinned snapshot (PubMed) is read once its files are listed in the data folder's
    SHA256SUMS; shown here with Cora's files under another prefix."""
    import hashlib
    import shutil

    src = data_root / "planetoid" / "raw"
    if not (src / "ind.cora.x").exists():
        pytest.skip("Planetoid files absent")
    raw = tmp_path / "planetoid" / "raw"
    raw.mkdir(parents=True)
    lines = []
    for part in planetoid.PARTS:
        shutil.copy(src / f"ind.cora.{part}", raw / f"ind.pubmed.{part}")
        digest = hashlib.sha256((raw / f"ind.pubmed.{part}").read_bytes()).hexdigest()
        lines.append(f"{digest}  ./planetoid/raw/ind.pubmed.{part}")
    (tmp_path / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    parts = planetoid.read_raw(raw, "pubmed")
    assert torch.equal(parts["x"], planetoid.read_raw(src, "cora")["x"])
    (raw / "ind.pubmed.ty").write_bytes((raw / "ind.pubmed.ty").read_bytes() + b"\0")
    with pytest.raises(DataError, match="ind.pubmed.ty"):
        planetoid.read_raw(raw, "pubmed")
