import json

import numpy as np
import pytest

from sbert_nli.data.nli import NO_GOLD, load_nli, parse_label, read_nli_file, split_holdout
from sbert_nli.data.sts import read_sts
from sbert_nli.data.synthetic import synthetic_nli
from sbert_nli.errors import SbertNliError


@pytest.mark.parametrize("raw, expected", [
    (0, 0), (1, 1), (2, 2), ("entailment", 0), ("Neutral", 1), (" contradiction ", 2), ("0", 0), ("2", 2),
    (1.0, 1), (-1, NO_GOLD), ("-1", NO_GOLD), ("-", NO_GOLD), (3, None), ("maybe", None), (None, None), (True, None),
])
def test_label_mapping_is_hugging_face_convention(raw, expected):
    assert parse_label(raw) is expected if expected is NO_GOLD or expected is None else parse_label(raw) == expected


def test_no_gold_rows_are_dropped_and_counted(tmp_path):
    rows = [{"premise": "a b", "hypothesis": "c", "label": lab} for lab in (0, -1, 2, -1, 1)]
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = read_nli_file(str(path))
    assert list(d.label) == [0, 2, 1]
    assert d.sources[0].dropped_no_gold == 2 and d.sources[0].rows == 5 and d.sources[0].kept == 3


def test_quoted_tsv_parses_pandas_escapes(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text('premise\thypothesis\tlabel\n"He said ""hi"" twice."\tA man speaks.\t0\nplain\t"tab\tinside"\t2\n')
    d = read_nli_file(str(path))
    assert d.premise == ['He said "hi" twice.', "plain"] and d.hypothesis[1] == "tab\tinside" and list(d.label) == [0, 2]


def test_shared_snli_files_agree_across_encodings(data):
    """The string-label jsonl and the int-label quoted tsv of SNLI dev agree row for row."""
    a = read_nli_file(str(data / "nli/normalized/snli_dev.jsonl"))
    b = read_nli_file(str(data / "nli/original/MJ-Jang-BECEL/data/snli/validation.tsv"))
    assert len(a) == len(b) == 9842
    assert a.premise == b.premise and a.hypothesis == b.hypothesis and np.array_equal(a.label, b.label)
    assert a.label_counts() == {"entailment": 3329, "neutral": 3235, "contradiction": 3278}


def test_mnli_keeps_text_as_is(data):
    d = read_nli_file(str(data / "nli/normalized/mnli_dev_matched.jsonl"))
    assert len(d) == 9815 and d.premise[0].startswith("The new rights are nice enough")
    assert "Everyone really likes the newest benefits " in d.hypothesis


def test_column_mapping_and_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"s1": ["x y", "z"], "s2": ["y", "w"], "gold": ["neutral", "entailment"]}), tmp_path / "p.parquet")
    d = read_nli_file(str(tmp_path / "p.parquet"), {"premise": "s1", "hypothesis": "s2", "label": "gold"})
    assert d.premise == ["x y", "z"] and list(d.label) == [1, 0]


@pytest.mark.parametrize("name, rows", [("sts-train.csv", 5749), ("sts-dev.csv", 1500), ("sts-test.csv", 1379)])
def test_sts_benchmark_parser_row_counts(data, name, rows):
    sts = read_sts(str(data / "stsbenchmark" / name))
    assert len(sts) == rows and sts.score.min() >= 0 and sts.score.max() <= 5
    normalized = read_sts(str(data / "stsbenchmark/normalized" / name.replace(".csv", ".jsonl")))
    assert normalized.sentence1 == sts.sentence1 and np.allclose(normalized.score, sts.score)


def test_sts_column_mapping_sick_style(tmp_path):
    path = tmp_path / "sick.csv"
    path.write_text("sentence_A,sentence_B,relatedness_score\na b,c d,4.5\ne f,g h,1.0\n")
    sts = read_sts(str(path), {"sentence1": "sentence_A", "sentence2": "sentence_B", "score": "relatedness_score"})
    assert sts.sentence2 == ["c d", "g h"] and list(sts.score) == [4.5, 1.0]


def test_synthetic_generator_is_deterministic_and_balanced():
    a, b = synthetic_nli(300, seed=3), synthetic_nli(300, seed=3)
    assert a.premise == b.premise and a.hypothesis == b.hypothesis
    assert a.label_counts() == {"entailment": 100, "neutral": 100, "contradiction": 100}
    assert synthetic_nli(300, seed=4).premise != a.premise


def test_holdout_split_is_by_premise_and_fixed():
    d = load_nli(["builtin:synthetic"], synthetic_pairs=900)
    train, held = split_holdout(d, 0.1, seed=0)
    assert len(train) + len(held) == len(d)
    assert not set(train.premise) & set(held.premise)
    assert split_holdout(d, 0.1, seed=0)[1].premise == held.premise


def test_empty_sentences_are_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "e.jsonl"
    path.write_text('{"premise": "  ", "hypothesis": "x", "label": 0}\n{"premise": "a", "hypothesis": "b", "label": 1}\n')
    d = read_nli_file(str(path))
    assert len(d) == 1 and d.sources[0].dropped_empty == 1
    assert "dropped 1 pair(s) with a missing sentence" in caplog.text


def test_mixed_label_encodings_are_refused(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("premise,hypothesis,label\na,b,0\nc,d,neutral\n")
    with pytest.raises(SbertNliError, match="mixes integer labels"):
        read_nli_file(str(path))
