"""Issue 13: every common release layout is read exactly as written, and every writer gives back
exactly one row per input. Inputs are built from the real files in ../shared/data where possible."""

import json
import logging
import math

import numpy as np
import pytest

from sbert_nli.cli import main
from sbert_nli.data.nli import read_nli_file
from sbert_nli.data.sts import read_sts
from sbert_nli.data.tables import read_table
from sbert_nli.errors import SbertNliError

@pytest.fixture(autouse=True)
def _fresh_cli_logging():
    """main() binds its log handler to the sys.stderr of the moment (a capture of an earlier test)."""
    yield
    logging.getLogger("sbert_nli").handlers.clear()


SNLI_HEADER = ["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
               "sentence1", "sentence2", "captionID", "pairID", "label1", "label2", "label3", "label4", "label5"]


def _quoted_dev_rows(data) -> list[dict]:
    """SNLI + MNLI dev pairs in which a sentence starts with '"' (the issue's 29 refused + 18 altered)."""
    rows = []
    for name in ("snli_dev.jsonl", "mnli_dev_matched.jsonl"):
        for line in (data / "nli/normalized" / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["premise"].startswith('"') or row["hypothesis"].startswith('"'):
                rows.append(row)
    return rows


def _snli_txt(rows, no_gold: int = 0, newline: str = "\n") -> str:
    """The SNLI 1.0 .txt layout: tab-separated, a header, no quoting; ``no_gold`` extra '-' rows."""
    lines = ["\t".join(SNLI_HEADER)]
    for i, row in enumerate(rows + rows[:no_gold]):
        gold = "-" if i >= len(rows) else row["label"]
        p, h = row["premise"], row["hypothesis"]
        lines.append("\t".join([gold, f"( {p} )", f"( {h} )", f"(ROOT {p})", f"(ROOT {h})", p, h, f"c{i}", f"p{i}",
                                row["label"], row["label"], "", "", ""]))
    return newline.join(lines) + newline


def _json_strict(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------ 1-3: layouts and quoting
@pytest.mark.parametrize("suffix", [".txt", ".tsv"])
def test_snli_1_0_txt_with_quoted_sentences_reads_exactly(data, tmp_path, suffix, caplog):
    rows = _quoted_dev_rows(data)
    assert len(rows) == 47
    path = tmp_path / f"snli_1.0_dev{suffix}"
    path.write_text(_snli_txt(rows, no_gold=3), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="sbert_nli"):
        d = read_nli_file(str(path))
    assert d.premise == [r["premise"] for r in rows] and d.hypothesis == [r["hypothesis"] for r in rows]
    assert [("entailment", "neutral", "contradiction")[i] for i in d.label] == [r["label"] for r in rows]
    assert (d.sources[0].rows, d.sources[0].dropped_no_gold, d.sources[0].kept) == (50, 3, 47)
    assert "recognised layout SNLI 1.0 / MultiNLI 1.0" in caplog.text


def test_sick_txt_with_crlf_reads_as_nli_and_sts(data, tmp_path):
    sts = read_sts(str(data / "stsbenchmark/sts-dev.csv"))
    labels = ["ENTAILMENT", "NEUTRAL", "CONTRADICTION"]
    lines = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
    lines += [f"{i}\t{a}\t{b}\t{s}\t{labels[i % 3]}" for i, (a, b, s) in enumerate(zip(sts.sentence1, sts.sentence2, sts.score))]
    path = tmp_path / "SICK.txt"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    nli = read_nli_file(str(path))
    again = read_sts(str(path))
    assert nli.premise == sts.sentence1 and nli.hypothesis == sts.sentence2 and len(nli) == 1500
    assert list(nli.label[:3]) == [0, 1, 2]
    assert again.sentence2 == sts.sentence2 and np.allclose(again.score, sts.score)


@pytest.mark.parametrize("name, text, expected_layout", [
    ("snli.jsonl", '{"gold_label": "neutral", "sentence1": "A b.", "sentence2": "C d.", "pairID": "1"}\n'
                   '{"gold_label": "-", "sentence1": "E.", "sentence2": "F.", "pairID": "2"}\n', "SNLI 1.0"),
    ("mnli.tsv", "index\tpromptID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n0\t1\tfiction\tA b.\tC d.\tneutral\tneutral\n"
                 "1\t2\tfiction\tE.\tF.\t-\t-\n", "GLUE MNLI"),
    ("AllNLI.tsv", "split\tdataset\tfilename\tsentence1\tsentence2\tlabel\ntrain\tSNLI\tx\tA b.\tC d.\tneutral\n"
                   "train\tSNLI\tx\tE.\tF.\t-\n", "AllNLI.tsv"),
    ("sick.txt", "pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\n1\tA b.\tC d.\tNEUTRAL\t3.2\n"
                 "2\tE.\tF.\t-\t1\n", "SICK"),
])
def test_well_known_nli_layouts_are_recognised(tmp_path, caplog, name, text, expected_layout):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="sbert_nli"):
        d = read_nli_file(str(path))
    assert d.premise == ["A b."] and d.hypothesis == ["C d."] and list(d.label) == [1]
    assert d.sources[0].dropped_no_gold == 1 and expected_layout in caplog.text


def test_explicit_columns_win_over_a_recognised_layout(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"gold_label": "neutral", "sentence1": "A", "sentence2": "B", "other": "C"}\n')
    d = read_nli_file(str(path), {"hypothesis": "other"})
    assert d.premise == ["A"] and d.hypothesis == ["C"]


def test_bare_quotes_in_unquoted_tsv_are_text(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text('premise\thypothesis\tlabel\nHe said "yes" and left.\tA man speaks.\t0\n'
                    '"Are we going to win?"\tSomeone asks.\t1\n')
    d = read_nli_file(str(path))
    assert d.premise == ['He said "yes" and left.', '"Are we going to win?"']


def test_quoting_option_is_explicit_and_ambiguity_is_an_error(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text('premise\thypothesis\tlabel\n"He said ""hi"""\tA.\t0\n"Are we going to win?"\tB.\t1\n')
    with pytest.raises(SbertNliError, match=r"ambiguous quoting \(delimiter '\\t'\).*line 2.*line 3.*--quoting"):
        read_nli_file(str(path))
    assert read_nli_file(str(path), quoting="csv").premise == ['He said "hi"', "Are we going to win?"]
    assert read_nli_file(str(path), quoting="none").premise == ['"He said ""hi"""', '"Are we going to win?"']
    broken = tmp_path / "b.tsv"
    broken.write_text('premise\thypothesis\tlabel\n"a\tb"\tc\t0\nx\ty\n')
    with pytest.raises(SbertNliError, match=r"delimiter '\\t'.*line 3.*2 fields, but the header has 3"):
        read_nli_file(str(broken))


def test_quoting_option_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "x.tsv"
    path.write_text('premise\thypothesis\tlabel\n"a\tb"\tc\t0\n')
    assert main(["evaluate", str(tmp_path / "none"), "--nli", str(path), "--quoting", "none"]) == 2
    assert "x.tsv:2: cannot read without quoting (delimiter '\\t'): 4 fields, but the header has 3" in capsys.readouterr().err


def test_jsonl_text_that_looks_like_a_date_stays_text(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "2020-01-01"}\n{"text": "2021-02-03 10:00:00"}\n')
    assert read_table(path).columns["text"] == ["2020-01-01", "2021-02-03 10:00:00"]


# ------------------------------------------------------------------ 4: one missing-text rule
def _write_missing(path, missing):
    import pandas as pd

    frame = pd.DataFrame({"premise": ["A b.", missing, "E f."], "hypothesis": ["C d.", "x", "G h."],
                          "label": ["neutral", "neutral", "entailment"]})
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".json":
        frame.to_json(path, orient="records", force_ascii=False)
    else:
        frame.to_parquet(path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
@pytest.mark.parametrize("missing", [None, "", "  ", math.nan])
def test_missing_text_is_dropped_and_counted_in_every_format(tmp_path, caplog, suffix, missing):
    path = tmp_path / f"m{suffix}"
    _write_missing(path, missing)
    d = read_nli_file(str(path))
    assert d.premise == ["A b.", "E f."] and d.sources[0].dropped_empty == 1
    assert "dropped 1 pair(s) with a missing sentence" in caplog.text


# ------------------------------------------------------------------ 5: encode keeps one row per input
@pytest.fixture()
def tiny_model(tiny_encoder, tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    tiny_encoder.save(folder)
    return str(folder)


SIX_LINES = ["The cat sits on the mat.", "A dog runs.", "", "Birds fly south.", "one\u2028two", "three\ffour"]


@pytest.mark.parametrize("name, content, expected", [
    ("six.txt", "\n".join(SIX_LINES) + "\n", SIX_LINES),
    ("crlf.txt", "a b\r\n\r\nc\r\n", ["a b", "", "c"]),
    ("four.jsonl", '{"text": "A dog runs."}\n{"text": ""}\n{"text": null}\n{"text": "one\\u2028two"}\n',
     ["A dog runs.", "", "", "one\u2028two"]),
])
def test_encode_gives_one_embedding_per_line_or_row(tiny_model, tmp_path, capsys, name, content, expected):
    from sbert_nli.data.tables import read_sentences
    from sbert_nli.model import SentenceEncoder

    path = tmp_path / name
    path.write_bytes(content.encode("utf-8"))
    assert read_sentences(path) == expected
    out = tmp_path / "e.npy"
    assert main(["-q", "encode", tiny_model, "--input", str(path), "--output", str(out)]) == 0
    emb = np.load(out)
    encoder = SentenceEncoder.load(tiny_model)
    one_by_one = np.stack([encoder.encode([text])[0] for text in expected])
    assert emb.shape == (len(expected), encoder.dim)
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)


def test_encode_refuses_non_text_values_naming_the_line(tmp_path):
    from sbert_nli.data.tables import read_sentences

    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\n{"text": 5}\n')
    with pytest.raises(SbertNliError, match=r"x.jsonl:2: 'text' is int 5, not text"):
        read_sentences(path)


# ------------------------------------------------------------------ 6: truncation and --max-seq-length
def test_truncation_is_reported_once_per_command(tiny_model, tmp_path, capfd):
    path = tmp_path / "s.txt"
    long = " ".join(["the man plays a guitar"] * 10)
    path.write_text(f"{long}\nA dog runs.\n{long}\n")
    assert main(["encode", tiny_model, "--input", str(path), "--output", str(tmp_path / "e.npy"),
                 "--max-seq-length", "8"]) == 0
    err = capfd.readouterr().err
    assert err.count("truncated") == 1 and "1 distinct sentence(s) longer than max_seq_length 8 tokens" in err
    sts = tmp_path / "sts.csv"
    sts.write_text(f"sentence1,sentence2,score\n{long},A dog runs.,1\nA cat.,{long} again,2\nA b.,C d.,3\n")
    assert main(["similarity", tiny_model, "--sentences", str(path), "--max-seq-length", "8"]) == 0
    assert capfd.readouterr().err.count("truncated") == 1
    assert main(["evaluate", tiny_model, "--sts", str(sts), "--max-seq-length", "8"]) == 0
    err = capfd.readouterr().err
    assert err.count("truncated") == 1 and "2 distinct sentence(s)" in err
    assert main(["compare", tiny_model, "--sts", str(sts), "--max-seq-length", "8"]) == 0
    assert capfd.readouterr().err.count("truncated") == 1


@pytest.mark.parametrize("length, message", [("0", "must be >= 1"), ("1", "leaves no room for text"),
                                             ("2", "adds 2 special token(s); use --max-seq-length 3")])
@pytest.mark.parametrize("command", ["encode", "similarity"])
def test_max_seq_length_too_small_for_text_is_refused(tiny_model, tmp_path, capfd, length, message, command):
    path = tmp_path / "s.txt"
    path.write_text("A man plays a guitar.\nThe stock market fell.\n")
    args = ["--input", str(path), "--output", str(tmp_path / "e.npy")] if command == "encode" else ["--sentences", str(path)]
    assert main([command, tiny_model, *args, "--max-seq-length", length]) == 2
    assert message in capfd.readouterr().err
    assert main([command, tiny_model, *args, "--max-seq-length", "3"]) == 0


# ------------------------------------------------------------------ 7: undefined correlations
def test_constant_similarities_give_null_not_noise(data, tiny_model, tmp_path, capfd):
    sts = read_sts(str(data / "stsbenchmark/sts-dev.csv"))
    path = tmp_path / "same.jsonl"
    path.write_text("".join(json.dumps({"sentence1": a, "sentence2": a, "score": s}) + "\n"
                            for a, s in zip(sts.sentence1, sts.score)))
    out = tmp_path / "m.json"
    assert main(["evaluate", tiny_model, "--sts", str(path), "--json", str(out)]) == 0
    captured = capfd.readouterr()
    metrics = _json_strict(out.read_text())["sts"][str(path)]
    assert metrics["pairs"] == 1500
    for name in ("cosine", "euclidean", "manhattan"):
        assert metrics[f"{name}_spearman"] is None and metrics[f"{name}_pearson"] is None
    assert isinstance(metrics["dot_spearman"], float)  # |u|^2 varies: dot is defined
    assert "| cosine | n/a | n/a |" in captured.out
    assert captured.err.count("undefined") == 1 and "warning: " + str(path) + ": cosine, euclidean, manhattan" in captured.err
    assert "Warning" not in captured.err and "Traceback" not in captured.err and "nan" not in captured.out.lower()
    compare_json = tmp_path / "c.json"
    assert main(["-q", "compare", tiny_model, "--sts", str(path), "--json", str(compare_json)]) == 0
    assert _json_strict(compare_json.read_text())["table"][0]["same.jsonl Spearman"] is None


def test_rounding_noise_is_constant_but_real_spread_is_not():
    from sbert_nli.evaluate import correlation_or_none

    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 500)
    assert correlation_or_none("spearman", gold, 1.0 + rng.normal(0, 1e-8, 500)) is None
    assert correlation_or_none("pearson", gold, np.full(500, 3.0)) is None
    assert correlation_or_none("spearman", np.full(500, 2.0), gold) is None
    assert correlation_or_none("spearman", gold, gold * 1e-3) == pytest.approx(100.0)


# ------------------------------------------------------------------ 8: MNR without negatives
def test_mnr_refuses_batches_without_any_negative(tmp_path, capfd):
    rows = [{"premise": f"person {i} walks home", "hypothesis": f"someone {i} walks", "label": "entailment"}
            for i in range(41)]
    path = tmp_path / "entail.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["train", "--model", "builtin:tiny-bert", "--train", str(path), "--loss", "mnr", "--max-steps", "2",
            "--no-progress", "--output", str(tmp_path / "out")]
    for engine in ("native", "sentence-transformers"):
        assert main([*args, "--batch-size", "1", "--engine", engine]) == 2
        assert "train.batch_size 1 gives the MNR loss no in-batch negatives" in capfd.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()
    # batches of 2 over 41 pairs: the last holds one pair and no hard negative
    assert main([*args, "--batch-size", "2"]) == 0
    assert "warning: MNR loss: 1 of 21 batches hold one pair without a hard negative" in capfd.readouterr().err


def test_mnr_warns_for_some_single_pair_batches(caplog):
    from sbert_nli.data.examples import check_mnr_negatives

    negative = np.array([-1, 3, -1, -1])
    check_mnr_negatives([np.array([0, 1]), np.array([2, 3])], negative)
    assert caplog.text == ""
    check_mnr_negatives([np.array([0, 1, 2]), np.array([3])], negative)
    assert "1 of 2 batches hold one pair without a hard negative" in caplog.text
    check_mnr_negatives([np.array([1])], negative)  # a hard negative: a real (if small) ranking
    with pytest.raises(SbertNliError, match="loss is exactly 0"):
        check_mnr_negatives([np.array([0]), np.array([2])], negative)


# ------------------------------------------------------------------ 9: -q --no-progress silences every bar
def test_quiet_no_progress_silences_the_sentence_transformers_engine(tmp_path, capfd):
    assert main(["-q", "train", "--preset", "smoke", "--engine", "sentence-transformers", "--max-steps", "2",
                 "--set", "data.synthetic_pairs=300", "--no-progress", "--output", str(tmp_path / "st")]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "%|" not in err, err


# ------------------------------------------------------------------ property: standard writers round-trip
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_chars = st.one_of(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   st.sampled_from(['"', "\t", "\u2028", "\u0085", "\f", "\r", "\n", ",", " "]))
_texts = st.text(_chars, max_size=10)
_plain = _texts.map(lambda t: t.replace("\t", " ").replace("\n", " ").replace("\r", " "))


def _write_table(path, rows, how):
    import csv

    pa = pytest.importorskip("pyarrow")
    columns = {"s1": [a for a, _ in rows], "s2": [b for _, b in rows], "n": list(range(len(rows)))}
    if how in ("csv", "tsv"):
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="," if how == "csv" else "\t")
            writer.writerow(columns)
            writer.writerows(zip(*columns.values()))
    elif how == "unquoted":
        path.write_text("\n".join("\t".join(map(str, r)) for r in [list(columns), *zip(*columns.values())]) + "\n",
                        encoding="utf-8")
    elif how == "jsonl":
        path.write_text("".join(json.dumps(dict(zip(columns, r)), ensure_ascii=False) + "\n"
                                for r in zip(*columns.values())), encoding="utf-8")
    elif how == "json":
        path.write_text(json.dumps([dict(zip(columns, r)) for r in zip(*columns.values())]), encoding="utf-8")
    else:
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize("suffix, how, quoting", [
    (".csv", "csv", "auto"), (".tsv", "tsv", "auto"), (".jsonl", "jsonl", "auto"), (".json", "json", "auto"),
    (".parquet", "parquet", "auto"), (".txt", "unquoted", "auto"), (".tsv", "unquoted", "none")])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_standard_writers_round_trip_exactly(tmp_path, suffix, how, quoting, data):
    texts = _plain if how == "unquoted" else _texts
    rows = data.draw(st.lists(st.tuples(texts, texts), min_size=1, max_size=6))
    path = tmp_path / f"t{suffix}"
    _write_table(path, rows, how)
    table = read_table(path, quoting)
    assert table.columns["s1"] == [a for a, _ in rows] and table.columns["s2"] == [b for _, b in rows]
    assert [int(n) for n in table.columns["n"]] == list(range(len(rows)))
