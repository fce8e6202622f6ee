"""Sphinx configuration of skulmfit's documentation.

Build (CI runs exactly this, with warnings as errors)::

    pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs docs/_build/html

Pages are MyST Markdown (so that tables and code blocks read the same as in the README, and
``tests/test_readme.py`` runs the Python blocks of both); the API reference is generated from the
numpydoc docstrings, and the model cards from ``skulmfit/weights/*.json``.
"""
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # the package of this checkout, installed or not

import skulmfit  # noqa: E402

project = "skulmfit"
author = "skulmfit contributors"
copyright = "skulmfit contributors"
version = release = skulmfit.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "matplotlib.sphinxext.plot_directive",
    "skulmfit_docs",  # docs/_ext: model cards from the weight cards, the command line's help
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
templates_path = ["_templates"]

# MyST: heading anchors for links such as [At IMDb scale](semi_supervised.md#at-imdb-scale), $...$ math.
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# API reference: one page per public object, from the docstrings (the single source of truth).
autosummary_generate = True
autosummary_imported_members = True  # the estimators are defined in submodules and exported by skulmfit
autodoc_default_options = {"members": False}
autodoc_typehints = "none"  # the numpydoc "Parameters" sections say it
# numpydoc: the class pages list their methods through the autosummary template, not numpydoc's
# member tables (which would need a stub page per inherited scikit-learn method).
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()  # no style checks: docstrings are reviewed with the code
numpydoc_xref_param_type = False

# Figures of the "how ULMFiT works" page are drawn at build time from skulmfit.schedule.
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]

html_theme = "pydata_sphinx_theme"
html_title = f"skulmfit {release}"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_sidebars = {"index": []}
html_show_sourcelink = False
