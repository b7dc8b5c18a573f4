"""Bad data files and data/split flags, refused by `train-one` and by `launch` before Ray starts.

Each case is a training file a user could hand us (or a flag of the data parser) and the words the
error must hold: the file, line, label or flag at fault and the fix. Both commands share the reader
(model/data.py), the generator (model/synthetic.py) and the data flags (rundir/preflight.py
`check_data_flags`), so every case runs through both; `launch` must leave no run directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HEADER = "id,text,label\n"


def rows(*labels: str, start: int = 1) -> str:
    """One CSV row per label: ids from `start`, a short integer text."""
    return "".join(f"{start + i},{i % 5} 7 9,{label}\n" for i, label in enumerate(labels))


TWO_LABELS = rows(*["1-1"] * 10, *["1-2"] * 10)  # a valid 5-fold file, to which a case adds a fault
OK = (HEADER + TWO_LABELS).encode()  # for the cases where a flag is at fault

# name: (train.csv bytes or None for no file, extra flags, needles); "{csv}" in a needle is the file's path.
CASES: dict[str, tuple[bytes | None, list[str], list[str]]] = {
    # the file itself
    "no file in the data directory": (None, [], ["train.csv does not exist", "Pass --data DIR with a train.csv"]),
    "empty file": (b"", [], ["{csv}", "the file is empty", "header id,text,label"]),
    "header only": (HEADER.encode(), [], ["{csv}", "no data rows", "add one row per text"]),
    "GBK-encoded file": ((HEADER + "1,\u4f60\u597d,1-1\n").encode("gbk"), [],
                         ["{csv}", "not UTF-8", "save it as UTF-8"]),
    "row with too many fields": ((HEADER + TWO_LABELS + "21,3,4,1-1\n").encode(), [],
                                 ["{csv}", "line 22", "quote a field that holds a comma"]),
    # the header
    "no label column (a test file)": ((b"id,text\n1,2 3\n2,4 5\n"), [],
                                      ["{csv}", "missing column(s) label", "the header must be id,text,label"]),
    "no text column": ((b"id,label\n1,1-1\n2,1-2\n"), [], ["{csv}", "missing column(s) text", "id,text,label"]),
    "no id column": ((b"text,label\n2 3,1-1\n4 5,1-2\n"), [], ["{csv}", "missing column(s) id", "id,text,label"]),
    "capitalised header": (("ID,Text,Label\n" + TWO_LABELS).encode(), [],
                           ["{csv}", "missing column(s) id, text, label", "found ID,Text,Label"]),
    "no header row": (TWO_LABELS.encode(), [], ["{csv}", "missing column(s)", "the header must be id,text,label"]),
    # rows
    "blank text": ((HEADER + TWO_LABELS + "21,   ,1-1\n").encode(), [],
                   ["{csv}", "line 22 (id 21) has an empty text", "remove or fill them"]),
    "missing text field": ((HEADER + TWO_LABELS + "21,,1-2\n").encode(), [],
                           ["{csv}", "line 22 (id 21)", "empty text"]),
    "label without a level-1 part": ((HEADER + TWO_LABELS + "21,3 4,24\n").encode(), [],
                                     ["{csv}", "line 22 (id 21) has label '24'", "form L1-L2 (e.g. 5-24"]),
    "label with three parts": ((HEADER + TWO_LABELS + "21,3 4,5-24-1\n").encode(), [],
                               ["{csv}", "line 22", "'5-24-1'", "L1-L2"]),
    "label with inner spaces": ((HEADER + TWO_LABELS + "21,3 4,5 - 24\n").encode(), [], ["{csv}", "line 22", "L1-L2"]),
    "empty label": ((HEADER + TWO_LABELS + "21,3 4,\n").encode(), [],
                    ["{csv}", "line 22 (id 21) has label ''", "L1-L2"]),
    "level-2 label under two parents": ((HEADER + TWO_LABELS + rows("2-2", "2-2", start=21)).encode(), [],
                                        ["{csv}", "level-2 label '2'", "under level-1 labels 1, 2", "one parent"]),
    "duplicate id": ((HEADER + TWO_LABELS + "5,3 4,1-1\n").encode(), [],
                     ["{csv}", "id '5' appears on lines 6, 22", "ids must be unique"]),
    "duplicate id but for spaces": ((HEADER + TWO_LABELS + " 5 ,3 4,1-1\n").encode(), [],
                                    ["{csv}", "id '5'", "unique"]),
    # labels against the split
    "one label only": ((HEADER + rows(*["1-1"] * 30)).encode(), [],
                       ["{csv}", "a single label, 1-1 (30 rows)", "Add rows of at least one other label"]),
    "a label with one row": ((HEADER + TWO_LABELS + rows("3-18", start=21)).encode(), [],
                             ["{csv}", "3-18 have 1 row each", "Merge each into a sibling label", "drop its row"]),
    "a label with one row at --folds 2": ((HEADER + TWO_LABELS + rows("3-18", start=21)).encode(), ["--folds", "2"],
                                          ["3-18 have 1 row each", "whatever --folds is", "Merge"]),
    "more folds than the largest label's rows": ((HEADER + rows("1-1", "1-1", "1-1", "1-2", "1-2")).encode(), [],
                                                 ["--folds 5 is more than the 3 rows of the largest label, 1-1",
                                                  "pass --folds 2 or fewer"]),
    "a dev fold scoring one label": ((HEADER + rows(*["1-1"] * 20, "1-2", "1-2")).encode(),
                                     ["--folds", "4", "--fold", "2"],
                                     ["dev fold 2 of --folds 4 holds only label 1-1", "meaningless",
                                      "Pass --folds 2 or fewer"]),
    # split flags
    "--folds 1": (OK, ["--folds", "1"], ["--folds is 1, but must be >= 2", "5 is the usual"]),
    "--folds 0": (OK, ["--folds", "0"], ["--folds is 0, but must be >= 2"]),
    "--fold equal to --folds": (OK, ["--fold", "5"], ["--fold is 5", "in 0..4 for --folds 5"]),
    "--fold beyond --folds 3": (OK, ["--folds", "3", "--fold", "7"], ["--fold is 7", "0..2"]),
    "negative --fold": (OK, ["--fold", "-1"], ["--fold is -1", "in 0..4"]),
    "not a number for --folds": (OK, ["--folds", "five"], ["--folds", "invalid int value"]),
    "negative --seed": (OK, ["--seed", "-1"], ["argument --seed: -1 is below 0; pass a number >= 0"]),
    "--max-seq-len 2": (OK, ["--max-seq-len", "2"], ["--max-seq-len is 2", "must be >= 3"]),
    "--data and --synthetic": (OK, ["--synthetic"], ["--data and --synthetic", "pass one"]),
}

# Synthetic data: no --data, a flag of the generator at fault.
SYNTHETIC: dict[str, tuple[list[str], list[str]]] = {
    "--synthetic-rows 100": (["--synthetic-rows", "100"],
                             ["--synthetic-rows is 100", "at least 211 rows", "pass --synthetic-rows 211 or more"]),
    "--synthetic-rows 210": (["--synthetic-rows", "210"], ["--synthetic-rows is 210", "--synthetic-rows 211"]),
    "--synthetic-rows 0": (["--synthetic-rows", "0"], ["--synthetic-rows is 0", "211"]),
    "--synthetic-rows -5": (["--synthetic-rows", "-5"], ["--synthetic-rows is -5", "211"]),
    "negative --synthetic-seed": (["--synthetic-rows", "300", "--synthetic-seed", "-1"],
                                  ["argument --synthetic-seed: -1 is below 0; pass a number >= 0"]),
    "synthetic --folds 1": (["--synthetic-rows", "300", "--folds", "1"], ["--folds is 1, but must be >= 2"]),
    "synthetic --fold 9": (["--synthetic-rows", "300", "--fold", "9"], ["--fold is 9", "0..4"]),
}

COMMANDS = ["train-one", "launch"]


def command(name: str, tmp_path: Path) -> tuple[list[str], tuple[Path, ...]]:
    """The command's argv prefix and what it must leave untouched (launch: no run directory)."""
    if name == "train-one":
        return ["train-one", "--max-epochs", "1", "--device", "cpu", "--no-progress"], ()
    runs = tmp_path / "runs"
    return ["launch", "--storage-path", runs, "--name", "x", "--num-samples", "1", "--max-epochs", "1"], (runs,)


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_file_is_refused(refused, tmp_path, name, case):
    content, flags, needles = CASES[case]
    data = tmp_path / "data"
    data.mkdir()
    csv = data / "train.csv"
    if content is not None:
        csv.write_bytes(content)
    argv, watch = command(name, tmp_path)
    refused([*argv, "--data", data, *flags], [n.replace("{csv}", str(csv)) for n in needles], watch=(data, *watch))


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("case", list(SYNTHETIC))
def test_bad_synthetic_data_flags_are_refused(refused, tmp_path, name, case):
    flags, needles = SYNTHETIC[case]
    argv, watch = command(name, tmp_path)
    refused([*argv, *flags], needles, watch=watch)
