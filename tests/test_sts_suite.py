"""STS suite (the SBERT paper's table): readers on the real and on hand-built files, aggregation
formulas, missing sets, hub errors, CLI/JSON/plot/model card, and MiniLM numbers against an
independent re-implementation of SentEval's formulas (scipy over SentenceTransformer.encode)."""

import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from sbert_nli.cli import main
from sbert_nli.config import SuiteConfig
from sbert_nli.data.senteval import SENTEVAL_SUBSETS, SuiteSet, read_senteval_year, read_sick
from sbert_nli.data.sts import STSData
from sbert_nli.errors import SbertNliError
from sbert_nli.sts_suite import SUITE_SETS, load_suite, plan_sources, run_suite, score_sets, summarise

PAIRS = {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186}
SICK_HEADER = ("pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\tentailment_AB\tentailment_BA\t"
               "sentence_A_original\tsentence_B_original\tsentence_A_dataset\tsentence_B_dataset\tSemEval_set")


# --------------------------------------------------------------------------- readers, real files
def test_senteval_years_on_the_real_files(data):
    for year, expected in PAIRS.items():
        suite_set = read_senteval_year(data / "sts-senteval", year)
        assert suite_set.pairs == expected, year
        assert [s.name for s in suite_set.subsets] == list(SENTEVAL_SUBSETS[year])
    sts16 = read_senteval_year(data / "sts-senteval", "STS16")
    assert [len(s) for s in sts16.subsets] == [254, 249, 230, 244, 209]  # 1318 ... empty gold lines skipped
    sts15 = {s.name: len(s) for s in read_senteval_year(data / "sts-senteval", "STS15").subsets}
    assert sts15 == {"answers-forums": 375, "answers-students": 750, "belief": 375, "headlines": 750, "images": 750}
    # STS12 surprise.SMTnews line 119 holds U+FFFD: kept as is, never replaced or dropped
    smtnews = read_senteval_year(data / "sts-senteval", "STS12").subsets[-1]
    assert sum("\ufffd" in s for s in smtnews.sentence1 + smtnews.sentence2) >= 1 and len(smtnews) == 399
    # STS14 tweet-news line 721: the trailing space of sentence 1 is kept
    tweets = read_senteval_year(data / "sts-senteval", "STS14").subsets[-1]
    assert tweets.sentence1[720].endswith(" ")


def test_root_folder_finds_our_layout(data):
    plan = plan_sources(SuiteConfig(root=str(data)))
    assert plan["STS12"] == ("senteval", str(data / "sts-senteval"))
    assert plan["STSb"] == ("file", str(data / "stsbenchmark" / "sts-test.csv"))
    assert plan["SICK-R"][0] == "missing" and "--sick" in plan["SICK-R"][1]


# --------------------------------------------------------------------------- readers, hand-built files
def _write_senteval(root, rng=None, empty_every=3):
    """A SentEval-layout folder with every subset of every year: 7 lines each, every
    ``empty_every``-th gold line empty (unscored)."""
    rng = rng or np.random.default_rng(0)
    words = "a man woman dog cat plays runs eats guitar ball food red big small the park".split()
    for year, subsets in SENTEVAL_SUBSETS.items():
        folder = root / f"{year}-en-test"
        folder.mkdir(parents=True)
        for name in subsets:
            pairs, gold = [], []
            for i in range(7):
                n1, n2 = rng.integers(2, 9, 2)  # lengths vary: a tiny encoder's cosines vary with them
                pairs.append(" ".join(rng.choice(words, n1)) + "\t" + " ".join(rng.choice(words, n2)))
                gold.append("" if i % empty_every == 1 else f"{rng.uniform(0, 5):.3f}")
            (folder / f"STS.input.{name}.txt").write_text("\n".join(pairs) + "\n", encoding="utf-8")
            (folder / f"STS.gs.{name}.txt").write_text("\n".join(gold) + "\n", encoding="utf-8")
    return root


def _write_stsb(path, n=12, seed=1):
    rng = np.random.default_rng(seed)
    lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{rng.uniform(0, 5):.3f}\tA man plays{' a' * i} guitar.\t"
             f"Someone plays{' the' * (i % 5)} music." for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_sick_final(path, crlf=True):
    rows = [SICK_HEADER]
    for i, split in enumerate(["TRAIN", "TEST", "TRIAL", "TEST", "TEST", "TRAIN", "TEST"]):
        rows.append(f"{i + 1}\tA dog runs{' far' * i}\tA cat sleeps{' here' * (i % 3)}\tNEUTRAL\t{1 + i * 0.5:.1f}\tA_neutral_B\t"
                    f"B_neutral_A\tA dog runs\tA cat sleeps\tFLICKR\tFLICKR\t{split}")
    path.write_bytes(("\r\n" if crlf else "\n").join(rows).encode("utf-8") + b"\r\n")
    return path


def _write_sick_semeval(path):
    rows = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
    rows += [f"{i}\tA boy sings {i}\tA girl dances {i % 2}\t{1 + i * 0.7:.1f}\tNEUTRAL" for i in range(5)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_senteval_reader_skips_empty_gold_lines_and_keeps_order(tmp_path):
    folder = tmp_path / "STS13-en-test"
    folder.mkdir()
    (folder / "STS.input.FNWN.txt").write_text("a b\tc d\ne\u0092 f\tg h\ni j\tk l\nm\tn\n", encoding="utf-8")
    (folder / "STS.gs.FNWN.txt").write_text("1.5\n\n4.0\n0.25\n", encoding="utf-8")
    for name in ("headlines", "OnWN"):
        (folder / f"STS.input.{name}.txt").write_text("x\ty\r\nz\tw\r\n", encoding="utf-8")  # CRLF
        (folder / f"STS.gs.{name}.txt").write_text("1\r\n2\r\n", encoding="utf-8")
    year = read_senteval_year(tmp_path, "STS13")
    fnwn = year.subsets[0]
    assert fnwn.sentence1 == ["a b", "i j", "m"] and fnwn.sentence2 == ["c d", "k l", "n"]
    assert fnwn.score.tolist() == [1.5, 4.0, 0.25] and year.pairs == 7
    assert year.subsets[1].sentence2 == ["y", "w"]  # CR is a line ending, not text


@pytest.mark.parametrize("gold, inputs, message", [
    ("1\n2\n", "a\tb\n", "has 1 lines but"),
    ("1\nfoo\n", "a\tb\nc\td\n", "gold score 'foo' is not a number"),
    ("1\nnan\n", "a\tb\nc\td\n", "not a finite number"),
    ("1\n2\n", "a\tb\nc\td\te\n", ":2: 3 tab-separated fields"),
    ("1\n\n", "a\tb\nc\td\n", "1 scored pair(s)"),
])
def test_senteval_reader_errors_name_the_file_and_line(tmp_path, gold, inputs, message):
    folder = tmp_path / "STS13-en-test"
    folder.mkdir()
    for name in SENTEVAL_SUBSETS["STS13"]:
        (folder / f"STS.input.{name}.txt").write_text(inputs, encoding="utf-8")
        (folder / f"STS.gs.{name}.txt").write_text(gold, encoding="utf-8")
    with pytest.raises(SbertNliError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_senteval_year(tmp_path, "STS13")


def test_senteval_reader_needs_every_senteval_subset(tmp_path):
    _write_senteval(tmp_path)
    (tmp_path / "STS14-en-test" / "STS.gs.images.txt").unlink()
    with pytest.raises(SbertNliError, match="STS.gs.images.txt does not exist"):
        read_senteval_year(tmp_path, "STS14")
    with pytest.raises(SbertNliError, match="STS12-en-test"):
        read_senteval_year(tmp_path / "nowhere", "STS12")


def test_sick_final_release_keeps_the_test_rows(tmp_path):
    sick = read_sick(_write_sick_final(tmp_path / "SICK.txt"))
    data = sick.subsets[0]
    assert sick.name == "SICK-R" and sick.pairs == 4
    assert data.sentence1 == ["A dog runs" + " far" * i for i in (1, 3, 4, 6)]
    assert data.sentence2[0] == "A cat sleeps here"  # no CR left on any field
    assert data.score.tolist() == [1.5, 2.5, 3.0, 4.0]
    assert "final release SICK.txt, SemEval_set == TEST" in sick.source and "4 pairs" in sick.source


def test_sick_semeval_file_keeps_every_row(tmp_path):
    sick = read_sick(_write_sick_semeval(tmp_path / "SICK_test_annotated.txt"))
    assert sick.pairs == 5 and "SemEval-2014 test file" in sick.source
    assert sick.subsets[0].score.tolist() == pytest.approx([1.0, 1.7, 2.4, 3.1, 3.8])


def test_sick_reader_errors(tmp_path):
    bad = tmp_path / "SICK.txt"
    bad.write_text("id\ta\tb\n1\tx\ty\n", encoding="utf-8")
    with pytest.raises(SbertNliError, match="header lacks sentence_A, sentence_B, relatedness_score"):
        read_sick(bad)
    with pytest.raises(SbertNliError, match="is a folder"):
        read_sick(tmp_path)
    short = _write_sick_semeval(tmp_path / "SICK_test_annotated.txt")
    short.write_text(short.read_text() + "9\tonly two\n", encoding="utf-8")
    with pytest.raises(SbertNliError, match=":7: 2 tab-separated fields, the header has 5"):
        read_sick(short)


def test_source_plan_options_root_hub_and_none(tmp_path):
    down = tmp_path / "data" / "downstream"  # SentEval's own layout
    _write_senteval(down / "STS")
    _write_stsb(down / "STS" / "STSBenchmark" / "sts-test.csv")
    (down / "SICK").mkdir()
    _write_sick_semeval(down / "SICK" / "SICK_test_annotated.txt")
    plan = plan_sources(SuiteConfig(root=str(tmp_path)))
    assert plan["STS15"] == ("senteval", str(down / "STS"))
    assert plan["STSb"] == ("file", str(down / "STS" / "STSBenchmark" / "sts-test.csv"))
    assert plan["SICK-R"] == ("file", str(down / "SICK" / "SICK_test_annotated.txt"))
    assert set(plan_sources(SuiteConfig()).values()) == {("hub", None)}  # no path at all: the hub
    plan = plan_sources(SuiteConfig(root=str(tmp_path), sick="none", stsb="hub"))
    assert plan["SICK-R"] == ("missing", "left out (--sick none)") and plan["STSb"] == ("hub", None)
    plan = plan_sources(SuiteConfig(senteval_dir=str(down / "STS")))
    assert plan["STSb"][0] == "missing" and plan["SICK-R"][0] == "missing"
    with pytest.raises(SbertNliError, match="--sick .*nope.txt does not exist"):
        plan_sources(SuiteConfig(senteval_dir=str(down / "STS"), sick=str(tmp_path / "nope.txt")))


def test_offline_hub_gives_one_line_naming_the_local_folder(tmp_path, capsys, monkeypatch):
    import sbert_nli.hub as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "_reachable", False)  # as if the hub did not answer
    assert main(["evaluate", str(tmp_path), "--suite", "sts"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mteb/sts12-sts" in err and "--senteval-dir DIR" in err
    # HF_HUB_OFFLINE=1: no probe; the datasets library finds no cached copy
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["evaluate", str(tmp_path), "--suite", "sts", "--senteval-dir", "none", "--stsb", "none",
                 "--sick", "hub"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mteb/sickr-sts" in err and "--sick SICK_test_annotated.txt" in err


# --------------------------------------------------------------------------- aggregation and average
def _reference(emb_by_subset, how):
    """SentEval's formulas, re-implemented: per-subset Spearman of cosine, then mean / weighted
    mean by pair count, or one Spearman over the concatenated subsets ("all")."""
    cos, gold = [], []
    for e1, e2, g in emb_by_subset:
        cos.append((e1 * e2).sum(1) / (np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1)))
        gold.append(g)
    if how == "all":
        return spearmanr(np.concatenate(cos), np.concatenate(gold))[0] * 100
    per = [spearmanr(c, g)[0] * 100 for c, g in zip(cos, gold)]
    return float(np.average(per, weights=[len(g) for g in gold] if how == "wmean" else None))


def _fake_sets(rng):
    sets = {}
    for name in SUITE_SETS:
        sizes = (5, 9, 14) if name.startswith("STS1") else (20,)
        subsets = [STSData(f"{name}-{i}", [f"{name} {i} a {k}" for k in range(n)], [f"{name} {i} b {k}" for k in range(n)],
                           rng.uniform(0, 5, n)) for i, n in enumerate(sizes)]
        sets[name] = SuiteSet(name, "test", subsets)
    return sets


def test_aggregations_and_average_follow_senteval_and_simcse():
    rng = np.random.default_rng(3)
    sets = _fake_sets(rng)
    table = {}

    def embed(texts):  # a fixed random vector per distinct text
        for t in texts:
            table.setdefault(t, rng.normal(size=8))
        return np.stack([table[t] for t in texts]).astype(np.float32)

    per_set = score_sets(embed, sets)
    for how in ("all", "mean", "wmean"):
        result = summarise(per_set, {}, how)
        expected = {}
        for name, s in sets.items():
            subs = [(np.stack([table[t] for t in d.sentence1]), np.stack([table[t] for t in d.sentence2]), d.score)
                    for d in s.subsets]
            expected[name] = _reference(subs, how)
            assert result["scores"][name] == pytest.approx(expected[name], abs=1e-9), (name, how)
        assert result["scores"]["Avg"] == pytest.approx(np.mean(list(expected.values())), abs=1e-9)
        assert list(result["scores"]) == [*SUITE_SETS, "Avg"] and result["aggregation"] == how
    assert per_set["STS12"]["subsets"]["STS12-1"]["pairs"] == 9
    # all three differ on split sets; on single sets they agree
    agg = per_set["STS14"]["aggregations"]
    assert len({round(agg[a]["cosine_spearman"], 9) for a in agg}) == 3
    assert len({round(v["cosine_spearman"], 9) for v in per_set["STSb"]["aggregations"].values()}) == 1
    # a missing set: Avg is n/a, the mean over the evaluated sets is reported apart and labelled
    partial = summarise({k: v for k, v in per_set.items() if k != "SICK-R"}, {"SICK-R": "no file"}, "all")
    assert partial["scores"]["SICK-R"] is None and partial["scores"]["Avg"] is None
    assert partial["not_evaluated"] == {"SICK-R": "no file"}
    assert partial["avg_evaluated"]["sets"] == list(SUITE_SETS[:6])
    six = [summarise(per_set, {}, "all")["scores"][n] for n in SUITE_SETS[:6]]
    assert partial["avg_evaluated"]["cosine_spearman"] == pytest.approx(np.mean(six))


# --------------------------------------------------------------------------- CLI, plot, train
@pytest.fixture()
def suite_root(tmp_path):
    root = tmp_path / "suite"
    _write_senteval(root / "sts-senteval")
    _write_stsb(root / "stsbenchmark" / "sts-test.csv")
    _write_sick_final(root / "SICK.txt")
    return root


def test_evaluate_and_compare_suite_commands(tiny_encoder, suite_root, tmp_path, capsys):
    from PIL import Image

    model = tmp_path / "tiny"
    model.mkdir()
    tiny_encoder.save(model)
    out = tmp_path / "suite.json"
    assert main(["-q", "evaluate", str(model), "--suite", "sts", "--sts-root", str(suite_root), "--aggregation", "mean",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| model"))
    assert header == "| model | STS12 | STS13 | STS14 | STS15 | STS16 | STSb | SICK-R | Avg |"
    assert "aggregation of STS12-16 sub-files: mean" in printed and "surprise.SMTnews" in printed
    assert "final release SICK.txt, SemEval_set == TEST" in printed
    result = json.loads(out.read_text())["suite"]
    assert list(result["scores"]) == [*SUITE_SETS, "Avg"] and result["aggregation"] == "mean"
    assert result["sets"]["STS16"]["pairs"] == 5 * 5 and result["scores"]["Avg"] is not None
    assert set(result["sets"]["STS12"]["aggregations"]["wmean"]) >= {f"{s}_spearman" for s in
                                                                     ("cosine", "euclidean", "manhattan", "dot")}
    # compare: side-by-side table + grouped bar chart; SICK-R left out -> n/a, Avg n/a
    plot = tmp_path / "bars.png"
    assert main(["-q", "compare", str(model), str(model), "--suite", "sts", "--sts-root", str(suite_root),
                 "--sick", "none", "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "tiny" in line]
    assert len(rows) == 2 and rows[0].endswith("| n/a | n/a |")
    assert "Avg n/a: SICK-R not evaluated" in printed
    assert Image.open(plot).size[0] >= 800
    assert main(["evaluate", str(model), "--sick", "x.txt"]) == 2  # suite option without --suite


def test_train_eval_suite_writes_results_and_model_card(suite_root, tmp_path):
    from sbert_nli.config import resolve
    from sbert_nli.train import train

    out = tmp_path / "run"
    config = resolve("smoke", None, {"train": {"epochs": 1, "max_steps": 5}, "data": {"synthetic_pairs": 300},
                                     "eval_suite": {"enabled": True, "root": str(suite_root)}})
    results = train(config, out, progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert saved["sts_suite"]["scores"] == pytest.approx(results["sts_suite"]["scores"])
    assert list(saved["sts_suite"]["scores"]) == [*SUITE_SETS, "Avg"]
    card = (out / "README.md").read_text()
    assert "| model | STS12 | STS13 | STS14 | STS15 | STS16 | STSb | SICK-R | Avg |" in card
    assert "aggregation of STS12-16 sub-files: all" in card


def test_train_checks_suite_paths_before_training(tmp_path, capsys):
    code = main(["train", "--preset", "smoke", "--output", str(tmp_path / "o"), "--eval-suite", str(tmp_path / "none")])
    assert code == 2 and "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- MiniLM against SentEval's formulas
@pytest.fixture(scope="module")
def reference_embeddings(minilm, data):
    """``name -> [(emb1, emb2, gold) per sub-file]`` from ``SentenceTransformer.encode``; each set is
    encoded once per module (MiniLM over all of STS12-16 takes minutes on 2 busy cores)."""
    from sentence_transformers import SentenceTransformer

    model, cache = SentenceTransformer(minilm, device="cpu"), {}

    def get(name):
        if name not in cache:
            loaded, _ = load_suite(SuiteConfig(root=str(data)), (name,))
            cache[name] = []
            for d in loaded[name].subsets:
                e = model.encode(d.sentence1 + d.sentence2, batch_size=64, convert_to_numpy=True).astype(np.float64)
                cache[name].append((e[:len(d)], e[len(d):], d.score))
        return cache[name]

    return get


def _check_minilm(minilm, data, reference_embeddings, sets):
    """run_suite (ours: SentenceEncoder, length-sorted batches, dedup) vs the reference, per
    aggregation and set, and for the mean over the evaluated sets."""
    from sbert_nli.model import SentenceEncoder

    ours = run_suite(SentenceEncoder.load(minilm), SuiteConfig(root=str(data)), sets=sets)
    assert ours["aggregation"] == "all"  # the SBERT paper's setting is the default
    evaluated = [n for n in sets if n in ours["sets"]]
    for how in ("all", "mean", "wmean"):
        result = summarise(ours["sets"], ours["not_evaluated"], how)  # same embeddings, other aggregation
        expected = {n: _reference(reference_embeddings(n), how) for n in evaluated}
        for name in evaluated:
            assert result["scores"][name] == pytest.approx(expected[name], abs=0.01), (name, how)
        assert result["avg_evaluated"]["cosine_spearman"] == pytest.approx(np.mean(list(expected.values())), abs=0.01)
    return ours


def test_minilm_full_suite_equals_senteval_formulas(minilm, data, reference_embeddings):
    """Every set of the shared data (it has no SICK file: SICK-R not evaluated, Avg n/a), every
    aggregation, and the mean of the evaluated sets (~2 minutes on 2 cores: encodes ~23k sentences twice)."""
    ours = _check_minilm(minilm, data, reference_embeddings, SUITE_SETS)
    assert round(ours["scores"]["STSb"], 2) == 82.03
    assert list(ours["not_evaluated"]) == ["SICK-R"] and ours["scores"]["Avg"] is None
    assert [ours["sets"][n]["pairs"] for n in PAIRS] == list(PAIRS.values())
