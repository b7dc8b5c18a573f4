import numpy as np
import pytest

from model.data import PAD, SPECIAL_TOKENS, LabelSet, Vocab, fold_indices, prepare_data, read_table, resolve_train_path
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


def test_label_with_fewer_rows_than_folds():
    labels = ["1-1"] * 10 + ["1-2"] * 10 + ["3-18"] * 3
    with pytest.raises(DataError, match=r"3-18 \(3 rows\) have fewer rows than --folds 5.*Lower --folds to 3"):
        fold_indices(labels, folds=5, fold=0, seed=0)


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


@pytest.mark.parametrize("folds, fold, message", [(1, 0, "must be >= 2"), (5, 5, r"must be in 0..4")])
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
