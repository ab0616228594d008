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
