"""cifarnet.files: a text file is replaced whole, or left as it was."""
import pytest

from cifarnet.files import replace_atomically


def test_replaces_the_file_when_the_block_ends(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("old\n")
    with replace_atomically(path) as f:
        f.write("new\n")
        assert path.read_text() == "old\n"               # readers see the old file until the rename
    assert path.read_text() == "new\n"
    assert list(tmp_path.iterdir()) == [path]


def test_a_failing_block_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("{}\n")
    with pytest.raises(RuntimeError, match="disk"):
        with replace_atomically(path) as f:
            f.write('{"half": ')
            raise RuntimeError("disk went away")
    assert path.read_text() == "{}\n"
    assert list(tmp_path.iterdir()) == [path]
