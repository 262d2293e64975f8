import os
import shutil

import pyro
import pytest
import torch

from pyro_kl.__main__ import main
from pyro_kl.gallery import render_gallery
from pyro_kl.recipes import RECIPES

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is missing")


def test_dot_source_gallery_needs_no_dot_and_keeps_the_param_store(tmp_path):
    pyro.param("users_own", torch.tensor(3.0))
    paths = render_gallery(str(tmp_path / "gallery"), format="gv")
    assert [os.path.basename(p) for p in paths] == [f"{name}.gv" for name in RECIPES]
    for path in paths:
        with open(path, encoding="utf-8") as source:
            text = source.read()
        assert "Real world P (data + guide)" in text
        assert "Dream world Q (model)" in text
        assert "I[P;Q]" in text
    assert list(pyro.get_param_store().keys()) == ["users_own"]
    assert pyro.param("users_own").item() == 3.0


def test_vae_source_draws_figure_five(tmp_path):
    paths = render_gallery(str(tmp_path), format="gv")
    (path,) = [p for p in paths if os.path.basename(p) == "vae.gv"]
    with open(path, encoding="utf-8") as source:
        text = source.read()
    assert '"real/x" -> "real/z"' in text
    # the dream world's z -> x is laid out with x on top, as an upward edge
    assert '"dream/x" -> "dream/z" [dir=back]' in text or '"dream/z" -> "dream/x"' in text
    assert '"real/z" -> "real/x"' not in text


def test_unknown_format_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="svg"):
        render_gallery(str(tmp_path), format="docx")
    assert not os.listdir(tmp_path)


@needs_dot
def test_cli_writes_one_svg_per_recipe(tmp_path, capsys):
    out = tmp_path / "gallery"
    main(["gallery", "--out", str(out), "--format", "svg"])
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / f"{name}.svg") for name in RECIPES]
    for path in printed:
        with open(path, encoding="utf-8") as picture:
            svg = picture.read()
        assert svg.lstrip().startswith("<?xml") or "<svg" in svg
        assert "Dream world Q (model)" in svg


def test_cli_writes_dot_sources_without_dot(tmp_path, capsys, monkeypatch):
    import pyro_kl.worlds.dot as worlds_dot

    monkeypatch.setattr(worlds_dot.shutil, "which", lambda name: None)
    out = tmp_path / "gallery"
    main(["gallery", "--out", str(out), "--format", "gv"])
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / f"{name}.gv") for name in RECIPES]
    with open(out / "vib.gv", encoding="utf-8") as source:
        text = source.read()
    assert "\"real/x\" -> \"real/y\"" in text and "I[P;Q] = C + R + const" in text
