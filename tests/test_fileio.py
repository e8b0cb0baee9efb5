"""tfseg.fileio: atomic writes leave the old file or the new one, never a part; checksums."""
import hashlib
import json
import os

import pytest

from tfseg.fileio import atomic_path, sha256_file, sha256_files, temporary_name, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    write_json_atomic(target, {"mean_dsc": 0.9})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"mean_dsc": 0.')  # half a file, then the writer dies
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"mean_dsc": 0.9}
    assert os.listdir(tmp_path) == ["summary.json"]


def test_the_temporary_is_a_hidden_sibling_named_after_the_writing_process(tmp_path):
    assert temporary_name(tmp_path / "a.csv") == tmp_path / f".a.csv.tmp-{os.getpid()}"
    out = tmp_path / "new" / "folder" / "m.json"  # missing parents are made
    write_json_atomic(out, {"b": 1, "a": [1, 2]})
    assert out.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'


def test_checksums_of_a_file_and_of_a_list_of_files(tmp_path):
    (tmp_path / "v").mkdir()
    first, second = tmp_path / "saved_model.pb", tmp_path / "v" / "w.index"
    first.write_bytes(b"graph" * 300_000)  # more than one 1 MiB block
    second.write_bytes(b"weights")
    assert sha256_file(first) == hashlib.sha256(b"graph" * 300_000).hexdigest()
    expected = hashlib.sha256()
    for path, name in ((first, "saved_model.pb"), (second, "v/w.index")):
        expected.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).hexdigest().encode())
    assert sha256_files(tmp_path, [first, second]) == expected.hexdigest()
    assert sha256_files(tmp_path, [second, first]) != expected.hexdigest()  # order is part of the digest
