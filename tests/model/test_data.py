import re

import numpy as np
import pandas as pd
import pytest

from model.data import (
    PAD,
    SPECIAL_TOKENS,
    LabelSet,
    Vocab,
    absent_from_dev,
    dev_fold_note,
    fold_indices,
    prepare_data,
    read_table,
)
from model.datafiles import resolve_train_path
from model.errors import DataError
from tests.conftest import write_csv

GOOD = "id,text,label\n1,3 5 ， 7,1-1\n2,4 4 ！,1-2\n3,9 10 11,10-35\n4,3 3,2-10\n"


def test_reads_the_real_format(tmp_path):
    frame = read_table(write_csv(tmp_path / "train.csv", GOOD))
    assert list(frame.columns) == ["id", "text", "label"]
    assert frame["label"].tolist() == ["1-1", "1-2", "10-35", "2-10"]
    assert frame.at[0, "text"] == "3 5 ， 7"


def test_reads_test_file_without_labels(tmp_path):
    frame = read_table(write_csv(tmp_path / "test.csv", "id,text\n7,1 2 3\n"), columns=("id", "text"))
    assert frame.to_dict("records") == [{"id": "7", "text": "1 2 3"}]


def test_data_path_may_be_a_directory(tmp_path):
    write_csv(tmp_path / "train.csv", GOOD)
    assert resolve_train_path(tmp_path) == tmp_path / "train.csv"


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,text\n1,2 3\n", r"missing column\(s\) label; the header must be id,text,label"),
        ("id,text,label\n1,2 3,1-1\n2,  ,1-2\n", r"line 3 \(id 2\) has an empty text"),
        ("id,text,label\n1,2 3,1-1\n2,4,12\n", r"line 3 \(id 2\) has label '12', which is not of the form L1-L2"),
        ("id,text,label\n1,2 3,1-1\n2,4,1-2-3\n", r"label '1-2-3', which is not of the form"),
        ("id,text,label\n1,2 3,1-1\n1,4,1-2\n", r"id '1' appears on lines 2, 3; ids must be unique"),
        ("id,text,label\n1,2 3,1-7\n2,4,2-7\n", r"level-2 label '7' appears under level-1 labels 1, 2"),
        ("id,text,label\n", r"no data rows"),
    ],
)
def test_bad_input_names_file_row_and_fix(tmp_path, text, message):
    path = write_csv(tmp_path / "train.csv", text)
    with pytest.raises(DataError, match=message) as err:
        read_table(path)
    assert "train.csv" in str(err.value)


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(DataError, match=r"does not exist. Pass --data DIR with a train.csv"):
        resolve_train_path(tmp_path / "nowhere")


@pytest.mark.parametrize("labels, folds, fold, message", [
    (["1-1"] * 30, 5, 0, r"has a single label, 1-1 \(30 rows\).*1.0 whatever a model predicts.*Add rows of"),
    (["1-1"] * 10 + ["1-2"] * 10 + ["3-18"], 5, 0, r"3-18 have 1 row each.*Merge each into a sibling label"),
    (["1-1"] * 10 + ["1-2"] * 10 + ["3-18"], 2, 0, r"3-18 have 1 row each: .* whatever --folds is"),
    (["1-1"] * 3 + ["1-2"] * 2, 5, 0, r"--folds 5 is more than the 3 rows of the largest label, 1-1; pass --folds 2"),
    (["1-1"] * 20 + ["1-2"] * 2, 4, 2, r"dev fold 2 of --folds 4 holds only label 1-1.*meaningless.*--folds 2"),
])
def test_splits_that_cannot_score_are_refused_with_the_fix(labels, folds, fold, message):
    with pytest.raises(DataError, match=message):
        fold_indices(labels, folds=folds, fold=fold, seed=0)


def test_a_label_with_fewer_rows_than_folds_is_kept_and_named_where_absent():
    """3 rows at 5 folds: in 3 dev folds, absent from 2, in training in all 5 (issue 12)."""
    frame = pd.DataFrame({"id": [str(i) for i in range(23)], "text": ["1 2"] * 23,
                          "label": ["1-1"] * 10 + ["1-2"] * 10 + ["3-18"] * 3})
    notes = []
    for fold in range(5):
        data = prepare_data(frame, folds=5, fold=fold, seed=0, max_seq_len=8)
        assert data.class_counts.min() >= 1  # every label is trained on in every fold
        notes.append(dev_fold_note(data, fold=fold, folds=5))
        assert (absent_from_dev(data) == {"3-18": 3}) == (notes[-1] is not None)
    absent = [n for n in notes if n is not None]
    assert len(absent) == 2
    assert re.search(r"^warning: label\(s\) 3-18 \(3 rows\) have no row in dev fold \d of --folds 5; level-2 "
                     r"macro-F1 counts each as F1 0 there. --folds 3 or fewer scores every label", absent[0])


def test_no_note_when_every_label_is_in_the_dev_fold(small_data):
    assert absent_from_dev(small_data) == {} and dev_fold_note(small_data, fold=0, folds=4) is None


def test_label_vocabulary_is_naturally_sorted_with_parents():
    labels = LabelSet.from_labels(["10-35", "2-10", "1-2", "1-1", "2-10"])
    assert labels.level2 == ("1-1", "1-2", "2-10", "10-35")
    assert labels.level1 == ("1", "2", "10")
    assert labels.level1_of.tolist() == [0, 0, 1, 2]
    assert labels.encode(["2-10", "1-1"]).tolist() == [2, 0]


def test_vocab_is_frequency_sorted_after_special_tokens():
    vocab = Vocab.build(["b a b", "c b a"])
    assert vocab.tokens == SPECIAL_TOKENS + ("b", "a", "c")
    ids, lengths = vocab.encode(["a zzz b", "c " * 10], max_seq_len=5)
    # [CLS] a [UNK] b [SEP] / [CLS] c c c [SEP] (truncated to max_seq_len)
    assert ids.tolist() == [[2, 6, 1, 5, 3], [2, 7, 7, 7, 3]]
    assert lengths.tolist() == [5, 5]
    ids, lengths = vocab.encode(["a"], max_seq_len=6)
    assert ids.tolist() == [[2, 6, 3, 0, 0, 0]] and lengths.tolist() == [3]
    assert vocab.index[PAD] == 0


def test_vocab_min_count_leaves_rare_tokens_to_unk():
    texts = ["b a b", "c b a"]  # b 3 times, a 2 times, c once
    assert Vocab.build(texts, min_count=2).tokens == SPECIAL_TOKENS + ("b", "a")
    assert Vocab.build(texts, min_count=3).tokens == SPECIAL_TOKENS + ("b",)
    ids, _ = Vocab.build(texts, min_count=2).encode(["c a b"], max_seq_len=5)
    assert ids.tolist() == [[2, 1, 6, 5, 3]]  # [CLS] [UNK] a b [SEP]


def test_folds_are_stratified_seeded_and_disjoint(small_frame):
    labels = small_frame["label"].tolist()
    a_train, a_dev = fold_indices(labels, folds=5, fold=1, seed=3)
    b_train, b_dev = fold_indices(labels, folds=5, fold=1, seed=3)
    assert np.array_equal(a_dev, b_dev)
    assert set(a_train).isdisjoint(a_dev) and len(a_train) + len(a_dev) == len(labels)
    dev_labels = set(small_frame["label"].iloc[a_dev])
    assert dev_labels == set(labels)  # every label in every fold
    _, other = fold_indices(labels, folds=5, fold=1, seed=4)
    assert not np.array_equal(a_dev, other)


@pytest.mark.parametrize("folds, fold, message", [
    (1, 0, "must be >= 2"), (5, 5, r"must be in 0..4"), (5, -1, r"must be in 0..4"),
])
def test_bad_fold_arguments(small_frame, folds, fold, message):
    with pytest.raises(DataError, match=message):
        fold_indices(small_frame["label"].tolist(), folds=folds, fold=fold, seed=0)


def test_prepare_data_builds_vocab_from_the_training_part_only(small_frame):
    data = prepare_data(small_frame, folds=4, fold=0, seed=0, max_seq_len=40)
    assert len(data.train) + len(data.dev) == len(small_frame)
    assert data.num_labels == 35 and data.train.ids.shape[1] == 40
    train_tokens = {t for i in range(len(small_frame)) for t in small_frame.text[i].split()}
    assert len(data.vocab) <= len(train_tokens) + len(SPECIAL_TOKENS)
    assert data.class_counts.sum() == len(data.train)
    assert (data.train.lengths <= 40).all() and (data.train.lengths >= 3).all()


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a BOM; the id column must still be found."""
    path = tmp_path / "train.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert read_table(path).equals(read_table(write_csv(tmp_path / "plain.csv", GOOD)))
