"""GLUE readers (each file format's quirks), missing-file errors, custom CSV/JSONL tasks, splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trunkserve.training.data.custom import load_custom_task
from trunkserve.training.data.glue import GLUE_TASKS, default_glue_dir, load_glue_task, read_glue_split
from trunkserve.training.data.types import DataError
from trunkserve.training.options import CustomTask
from trunkserve.training.prepare import cap, carve_validation

SHARED = default_glue_dir()


def write(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.fixture()
def glue(tmp_path: Path) -> Path:
    cola = "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more books I ask to whom he will give.\n"
    write(tmp_path / "CoLA/train.tsv", cola)
    write(tmp_path / "CoLA/dev.tsv", cola)
    mrpc = ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
            "1\t1\t2\tHe said \"yes .\tHe agreed .\n0\t3\t4\tA cat .\tA \"dog\" .\n")
    write(tmp_path / "MRPC/train.tsv", mrpc, bom=True)
    write(tmp_path / "MRPC/dev.tsv", mrpc, bom=True)
    stsb = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
            "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man is dancing.\tA man dances.\t4.750\n"
            "1\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA dog runs.\tA cat sleeps.\t0.5\n")
    write(tmp_path / "STS-B/train.tsv", stsb)
    write(tmp_path / "STS-B/dev.tsv", stsb)
    mnli_h = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
    mnli = mnli_h + "0\t1\t1\tgov\t(\t(\t(\t(\tIt rains.\tIt is wet.\tentailment\tentailment\n" \
                    "1\t1\t1\tgov\t(\t(\t(\t(\tIt rains.\tIt is dry.\tcontradiction\tcontradiction\n"
    for split in ("train", "dev_matched", "dev_mismatched"):
        write(tmp_path / f"MNLI/{split}.tsv", mnli)
    qqp = ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
           "0\t1\t2\tHow?\tHow so?\t1\n1\t3\t4\tbroken row\n2\t5\t6\tWhy?\tWhen?\t0\n")
    write(tmp_path / "QQP/train.tsv", qqp)
    write(tmp_path / "QQP/dev.tsv", qqp)
    return tmp_path


def test_cola_has_no_header(glue):
    t = load_glue_task("cola", glue)
    assert [e.label for e in t.train] == [1, 0]
    assert t.train[0].text.startswith("The sailors") and t.train[0].text_pair is None
    assert t.labels == ["unacceptable", "acceptable"] and t.metric == "cola"


def test_mrpc_bom_header_and_quotes(glue):
    t = load_glue_task("mrpc", glue)
    assert [e.label for e in t.train] == [1, 0]
    assert t.train[0].text == 'He said "yes .'  # quotes are text, not CSV quoting
    assert t.train[1].text_pair == 'A "dog" .'


def test_stsb_is_regression(glue):
    t = load_glue_task("stsb", glue)
    assert t.task_type == "regression" and t.labels == ["score"]
    assert [e.label for e in t.train] == [4.75, 0.5]
    assert (t.train[0].text, t.train[0].text_pair) == ("A man is dancing.", "A man dances.")


def test_mnli_matched_and_mismatched(glue):
    t = load_glue_task("mnli", glue)
    assert list(t.dev) == ["dev_matched", "dev_mismatched"]
    assert [e.label for e in t.train] == [1, 0]  # contradiction=0, entailment=1, neutral=2


def test_qqp_skips_short_rows(glue):
    t = load_glue_task("qqp", glue)
    assert [(e.text, e.label) for e in t.train] == [("How?", 1), ("Why?", 0)]


def test_missing_file_is_named(glue):
    with pytest.raises(DataError, match=r"RTE/train\.tsv"):
        load_glue_task("rte", glue)
    (glue / "CoLA/dev.tsv").unlink()
    with pytest.raises(DataError, match=r"CoLA/dev\.tsv"):
        load_glue_task("cola", glue)


def test_unknown_label_is_an_error(glue):
    write(glue / "RTE/train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match="maybe"):
        read_glue_split(glue / "RTE/train.tsv", GLUE_TASKS["rte"])


@pytest.mark.skipif(not (SHARED / "MRPC/dev.tsv").exists(), reason="shared GLUE data not present")
@pytest.mark.parametrize("task,n_dev", [("cola", 1043), ("sst2", 872), ("mrpc", 408), ("stsb", 1500), ("rte", 277)])
def test_shared_glue_dev_sizes(task, n_dev):
    t = load_glue_task(task, SHARED, splits=("dev",))
    assert len(t.dev["dev"]) == n_dev
    labels = {e.label for e in t.dev["dev"]}
    if task == "stsb":
        assert min(labels) >= 0 and max(labels) <= 5
    else:
        assert labels == {0, 1}


def test_custom_csv_and_jsonl(tmp_path):
    csv = write(tmp_path / "t.csv", "text,text_pair,label\nhello,,pos\nbye,,neg\nhi there,,pos\n")
    t = load_custom_task("mine", csv, dev=csv)
    assert t.labels == ["neg", "pos"] and [e.label for e in t.train] == [1, 0, 1] and t.task_type == "classification"
    rows = [{"text": f"s{i}", "text_pair": "p", "label": i % 3 + 0.5} for i in range(20)]
    js = write(tmp_path / "r.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    r = load_custom_task("reg", js)
    assert r.task_type == "regression" and r.labels == ["score"]
    assert len(r.train) == 18 and len(r.dev["dev"]) == 2 and r.train[0].text_pair == "p"
    ints = write(tmp_path / "i.jsonl", "\n".join(json.dumps({"text": "x", "label": v}) for v in (10, 2, 2, 10)))
    assert load_custom_task("ints", ints, dev=ints).labels == ["2", "10"]  # numeric order
    with pytest.raises(DataError, match="lacks"):
        load_custom_task("bad", write(tmp_path / "b.csv", "sentence,label\nx,1\n"))


def test_custom_rows_that_would_train_on_garbage_are_refused(tmp_path):
    def jsonl(name, rows):
        return write(tmp_path / name, "\n".join(json.dumps(r) for r in rows) + "\n")

    good = [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}]
    cases = {
        "null label": ([*good, {"text": "c", "label": None}], "row 3: label is None"),
        "empty label": ([*good, {"text": "c", "label": " "}], "row 3: label is ' '"),
        "infinite label": ([{"text": "a", "label": 1.5}, {"text": "b", "label": float("inf")}], "row 2: label is inf"),
        "nan label string": ([{"text": "a", "label": "2.5"}, {"text": "b", "label": "nan"}], "row 2: label is 'nan'"),
        "null text": ([*good, {"text": None, "label": "pos"}], "row 3: text is NoneType"),
        "number text": ([*good, {"text": 5, "label": "pos"}], "row 3: text is int 5"),
        "object pair": ([*good, {"text": "c", "text_pair": {"a": 1}, "label": "pos"}], "row 3: text_pair is dict"),
        "empty text": ([*good, {"text": "  ", "label": "pos"}], "row 3: text is empty"),
    }
    for name, (rows, message) in cases.items():
        with pytest.raises(DataError, match=message.replace("(", r"\(")):
            load_custom_task("t", jsonl(name.replace(" ", "_") + ".jsonl", rows))
    short = write(tmp_path / "short.csv", "text,label\nhello,pos\nbye\n")
    with pytest.raises(DataError, match="row 2: label is None"):
        load_custom_task("t", short)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,label\ncaf\u00e9,pos\nthe,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.csv: not UTF-8 text"):
        load_custom_task("t", latin1)


def test_custom_integer_labels_are_one_class_per_value(tmp_path):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": "1.0"}, {"text": "c", "label": "1"}, {"text": "d", "label": 0}]
    js = write(tmp_path / "ints.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    t = load_custom_task("t", js, dev=js)
    assert t.labels == ["0", "1"] and [e.label for e in t.train] == [1, 1, 1, 0]


def test_custom_spec_parsing():
    name, c = CustomTask.parse("reviews=a.csv,b.csv:regression")
    assert (name, c.train, c.dev, c.task_type) == ("reviews", "a.csv", "b.csv", "regression")


def test_validation_split_is_seeded_and_disjoint():
    from trunkserve.training.data.types import Example

    rows = [Example(str(i), None, i % 2) for i in range(100)]
    tr, va = carve_validation(rows, 0.1, 500, seed=3)
    tr2, va2 = carve_validation(rows, 0.1, 500, seed=3)
    assert [e.text for e in va] == [e.text for e in va2] and len(va) == 10
    assert not {e.text for e in tr} & {e.text for e in va} and len(tr) + len(va) == 100
    assert len(cap(rows, 30, 0)) == 30 and cap(rows, None, 0) is rows
