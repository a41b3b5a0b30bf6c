"""Sphinx configuration of skebm's documentation site.

Build (from the repository root, with the ``docs`` extra installed)::

    OPENBLAS_NUM_THREADS=1 SKEBM_FAST_EXAMPLES=1 python -m sphinx -W --keep-going -b html docs docs/_build/html

``SKEBM_FAST_EXAMPLES=1`` makes the long gallery examples run with smaller
settings (each one prints that it does); without it they run in full.
"""

import os
import shutil
import warnings

from sklearn.exceptions import ConvergenceWarning

import skebm

project = "skebm"
author = "the skebm developers"
copyright = "2026, the skebm developers"
release = version = skebm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    # MathJax served from _static/mathjax (the package's copy), not from a CDN:
    # it sets mathjax_path and copies the files when the build finishes.
    "sphinx-mathjax-offline",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_templates", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

templates_path = ["_templates"]
autosummary_generate = True
autodoc_default_options = {"inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

html_theme = "pydata_sphinx_theme"
html_title = f"skebm {version}"
html_theme_options = {"navigation_with_keys": False}

# The gallery: every example in examples/ is shown; the ones listed in
# NOT_EXECUTED are shown without their output, and say why (below, in the
# build log and in examples/README.rst).
NOT_EXECUTED = {}
if not shutil.which("bible") or os.environ.get("SKEBM_FAST_EXAMPLES") == "1":
    NOT_EXECUTED["kjv_next_word.py"] = (
        "needs the `bible` program (Debian package bible-kjv) and about a minute; "
        "not run when it is missing or SKEBM_FAST_EXAMPLES=1")
executed = sorted(name for name in os.listdir(os.path.join(os.path.dirname(__file__),
                                                             "..", "examples"))
                  if name.endswith(".py") and name not in NOT_EXECUTED)
for name, reason in NOT_EXECUTED.items():
    print(f"sphinx-gallery: examples/{name} is shown without running it: {reason}")

# With SKEBM_FAST_EXAMPLES=1 the examples' fits run fewer epochs than they
# need, and each would print into its page that max_iter ran out (a
# ConvergenceWarning); the examples say they are shrunk instead.
if os.environ.get("SKEBM_FAST_EXAMPLES") == "1":
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/(" + "|".join(name.replace(".", r"\.") for name in executed) + ")$",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    # No pages of computation times: they load their table scripts from CDNs.
    "write_computation_times": False,
}
