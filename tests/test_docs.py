"""The documentation says what the code does.

- Every ```python block of the README and of each user-guide page
  (``docs/guide/*.md``) runs, the blocks of one page in order in one namespace,
  in a fresh folder. A block preceded by ``<!-- docs-test: needs cuda -->``
  runs where CUDA is available; one preceded by ``<!-- docs-test: torchrun N
  -->`` is saved as a script and run in N processes by torch's launcher.
- The API pages are generated from ``__all__`` and cover every public name.
- The tutorials' index lists every notebook; the README's printed terms and
  its picture are what the code gives now.
"""

import contextlib
import io
import os
import pathlib
import re
import subprocess
import sys
import warnings

import pytest
import torch

ROOT = pathlib.Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted((DOCS / "guide").glob("*.md"))
SLOW_PAGES = {"recipes.md", "logging.md", "checkpoints.md", "distributed.md"}
BLOCK = re.compile(r"(?:<!-- docs-test: (?P<needs>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)

sys.path.insert(0, str(DOCS / "_ext"))
import pyro_kl_docs  # noqa: E402


def blocks(page: pathlib.Path):
    text = page.read_text()
    return [(match.group("needs"), match.group("code")) for match in BLOCK.finditer(text)]


def _page_param(page):
    marks = [pytest.mark.slow] if page.name in SLOW_PAGES else []
    return pytest.param(page, id=str(page.relative_to(ROOT)), marks=marks)


def test_every_page_is_collected():
    assert len(PAGES) >= 17
    assert any(blocks(page) for page in PAGES)


@pytest.mark.parametrize("page", [_page_param(page) for page in PAGES])
def test_every_python_block_of_the_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()  # a page may set them (threads.md does)
    try:
        run_page(page, tmp_path)
    finally:
        torch.set_num_threads(threads)


def run_page(page, tmp_path):
    namespace = {"__name__": "__docs__"}
    ran = 0
    for index, (needs, code) in enumerate(blocks(page)):
        where = f"{page.relative_to(ROOT)} block {index + 1}"
        if needs == "needs cuda":
            if not torch.cuda.is_available():
                continue
        elif needs and needs.startswith("torchrun"):
            run_with_torchrun(code, int(needs.split()[1]), tmp_path, where)
            ran += 1
            continue
        elif needs:
            raise AssertionError(f"{where}: unknown docs-test marker {needs!r}")
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            third_party_warnings()
            exec(compile(code, where, "exec"), namespace)
        ran += 1
    assert ran or not blocks(page) or not torch.cuda.is_available()


def third_party_warnings():
    """Lightning's advice and deprecations, which are not this project's (as in test_logging)."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning,
                            module=r"(lightning|lightning_fabric|pytorch_lightning)(\.|$)")


def run_with_torchrun(code: str, processes: int, folder: pathlib.Path, where: str):
    script = folder / "script.py"
    script.write_text(code)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", str(script)]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
    assert "'distortion'" in result.stdout


def test_the_distributed_block_is_run_by_torchrun():
    (block,) = blocks(DOCS / "guide" / "distributed.md")
    assert block[0] == "torchrun 2"


# ---- the API reference -----------------------------------------------------------


def test_api_pages_document_every_public_module():
    assert pyro_kl_docs.PUBLIC_MODULES == ("pyro_kl", "pyro_kl.recipes", "pyro_kl.diagnostics")
    pages = "".join(path.read_text() for path in (DOCS / "api").glob("*.rst"))
    for module_name in pyro_kl_docs.PUBLIC_MODULES:
        assert f".. pyro-kl-all:: {module_name}\n" in pages


@pytest.mark.parametrize("module_name", pyro_kl_docs.PUBLIC_MODULES)
def test_every_public_name_has_an_entry(module_name):
    text = pyro_kl_docs.api_rst(module_name, ["pyro_kl.diagnostics"]
                                if module_name == "pyro_kl" else None)
    module = __import__(module_name, fromlist=["__all__"])
    entries = re.findall(r"^\.\. (?:auto)?(?:py:)?(?:class|function|data):: (\S+)"
                         r"(?:\n   :module: (\S+))?", text, re.M)
    documented = {f"{module_}.{name}" if module_ else name for name, module_ in entries}
    assert documented == {f"{module_name}.{name}" for name in module.__all__}


def test_a_name_missing_from_the_built_docs_is_a_warning(monkeypatch):
    class Domain:
        objects = {"pyro_kl.WeightedELBO": None}

    class Env:
        def get_domain(self, name):
            return Domain()

    warnings = []
    monkeypatch.setattr(pyro_kl_docs.logger, "warning", lambda *args: warnings.append(args))
    pyro_kl_docs.check_public_names(None, Env())
    missing = {args[1] + "." + args[2] for args in warnings}
    assert "pyro_kl.RateDistortionELBO" in missing and "pyro_kl.recipes.VAE" in missing
    assert "pyro_kl.WeightedELBO" not in missing


# ---- tutorials, README ---------------------------------------------------------------


def test_the_tutorials_index_lists_every_notebook():
    index = (DOCS / "tutorials" / "index.md").read_text()
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        assert f"<{notebook.stem}>`" in index, notebook.name


def test_the_readme_prints_what_it_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## One example\n.*?```python\n(.*?)```", text, re.S).group(1)
    said = re.search(r"prints \(.*?\)\n\n```text\n(.*?)```", text, re.S).group(1)
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            exec(compile(code, "README.md", "exec"), {"__name__": "__docs__"})
    finally:
        torch.set_num_threads(threads)
    got, expected = printed.getvalue().splitlines(), said.splitlines()
    assert got[0] == expected[0] == "L = D + 0.5·R"
    numbers = [float(n) for n in re.findall(r"-?\d+\.\d+", got[1])]
    assert numbers == pytest.approx([float(n) for n in re.findall(r"-?\d+\.\d+", expected[1])],
                                    rel=1e-3)
    assert re.sub(r"-?\d+\.\d+", "#", got[1]) == re.sub(r"-?\d+\.\d+", "#", expected[1])


def test_the_readme_picture_is_what_the_code_draws():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_figures
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    committed = (DOCS / "_static" / "readme_worlds.gv").read_text()
    assert docs_figures.readme_digraph().source == committed
    assert (DOCS / "_static" / "readme_worlds.svg").exists()
    assert "(docs/_static/readme_worlds.svg)" in (ROOT / "README.md").read_text()
