"""fames.io.write_section: a marked section of a text file replaced in place, or appended; the rest kept."""

from fames.io import write_section


def test_write_section_replaces_or_appends(tmp_path):
    f = tmp_path / "r.md"
    write_section(f, "<!-- s -->", "first")
    assert f.read_text() == "<!-- s -->\n\nfirst\n\n<!-- s -->\n"
    f.write_text("# head\n\n" + f.read_text() + "\ntail\n")
    write_section(f, "<!-- s -->", "second\n")
    assert f.read_text() == "# head\n\n<!-- s -->\n\nsecond\n\n<!-- s -->\n\ntail\n"
    write_section(f, "<!-- t -->", "other")
    assert f.read_text().endswith("tail\n\n<!-- t -->\n\nother\n\n<!-- t -->\n")
    assert "second" in f.read_text()


def test_npz_bytes_round_trips_any_array_name(tmp_path):
    import io

    import numpy as np

    from fames.flow.stages import Stages
    from fames.io import npz_bytes

    arrays = {"file": np.arange(6).reshape(2, 3), "layer1.0.conv1": np.ones((2, 2), np.float32), "x": np.int8(3)}
    for compress in (False, True):
        with np.load(io.BytesIO(npz_bytes(arrays, compress))) as z:
            assert z.files == list(arrays)
            for k, v in arrays.items():
                assert z[k].dtype == np.asarray(v).dtype and np.array_equal(z[k], v)
    st = Stages(tmp_path)
    calls = []
    got = st.arrays("estimate", "k", lambda: calls.append(1) or arrays)
    again = st.arrays("estimate", "k", lambda: calls.append(1) or arrays)  # from disk
    assert calls == [1] and all(np.array_equal(again[k], v) for k, v in arrays.items()) and got is arrays


def test_a_checked_json_entry_copied_under_another_key_is_not_trusted(tmp_path):
    import shutil

    import pytest

    from fames.io import read_checked_json, write_checked_json

    write_checked_json(tmp_path / "a1.json", {"pdp_fj": 37.0})
    write_checked_json(tmp_path / "b2.json", {"pdp_fj": 48.2})
    assert read_checked_json(tmp_path / "b2.json") == {"pdp_fj": 48.2}
    shutil.copy(tmp_path / "a1.json", tmp_path / "b2.json")  # another design's cost under this design's key
    with pytest.warns(UserWarning, match="damaged or was edited"):
        assert read_checked_json(tmp_path / "b2.json") is None
